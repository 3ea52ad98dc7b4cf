"""Temporal cleaning of (time, features) signals: nilearn's ``signal.clean`` on numpy or dask.

``clean`` has nilearn 0.14.1's signature, defaults and results. On a numpy array it returns
numpy; on a (T, V) dask array it returns a lazy dask array chunked along features with the
whole time axis per chunk. The small confound matrix is processed eagerly once (cosine
drift, interpolation/censoring, detrend, filter, scaling, pivoted QR) into an orthonormal
basis Q; the voxel work is then one ``map_blocks`` (detrend -> filter -> project out Q ->
standardize), so cleaning fuses into a single pass over the data.
"""

from __future__ import annotations

import dataclasses
import numbers

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from lazyconn._utils import check_int, check_real, check_type, warn
from lazyconn.config import float_dtype_for
from lazyconn.exceptions import (
    AllVolumesRemovedError,
    DimensionError,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.io.confounds import sanitize_confounds
from lazyconn.ops import temporal as tk

__all__ = ["butterworth", "clean", "column_cleaner", "high_variance_confounds"]

_FILTERS = ("butterworth", "cosine", False)
_BUTTERWORTH_KWARGS = ("order", "padtype", "padlen", "copy")
_PADTYPES = ("odd", "even", "constant", None)


# --------------------------------------------------------------------------- validation


def _check_bool(name, value):
    return bool(check_type(name, value, (bool, np.bool_), "True or False"))


def _check_cutoff(name, value):
    return check_real(
        name,
        value,
        low=0,
        low_inclusive=False,
        allow_none=True,
        expected="None or a frequency in Hz > 0 (use None to switch this side of the filter off)",
    )


def _check_standardize(standardize):
    if isinstance(standardize, (bool, np.bool_)):
        warn(
            "boolean values for 'standardize' will be deprecated in nilearn 0.15.0.\n"
            "Use 'zscore_sample' instead of 'True' or use 'None' instead of 'False'.",
            FutureWarning,
        )
        return "zscore_sample" if standardize else None
    if standardize not in ("zscore_sample", "psc", None):
        raise ParameterError(
            f"standardize={standardize!r} is not valid; expected one of 'zscore_sample', "
            "'psc', None (or the deprecated True/False). ('zscore' with ddof=0 was removed "
            "in nilearn 0.14; use 'zscore_sample'.)"
        )
    return standardize


def _check_filter(filter, low_pass, high_pass, t_r):
    """nilearn's ``_check_filter_parameters``; returns the active filter (or False)."""
    valid = (isinstance(filter, (bool, np.bool_)) and not filter) or (
        isinstance(filter, str) and filter in _FILTERS
    )
    if not valid:
        raise ParameterError(
            f"filter={filter!r} is not valid; expected 'butterworth', 'cosine' or False."
        )
    check_real(
        "t_r",
        t_r,
        low=0,
        low_inclusive=False,
        allow_none=True,
        expected="the repetition time in seconds (> 0) or None",
    )
    low_pass = _check_cutoff("low_pass", low_pass)
    high_pass = _check_cutoff("high_pass", high_pass)
    if not filter:
        if low_pass is not None or high_pass is not None:
            warn(
                "No filter type selected but cutoff frequency provided. Will not perform filtering."
            )
        return False, low_pass, high_pass
    if filter == "cosine":
        if t_r is None or high_pass is None:
            raise ParameterError(
                "filter='cosine' needs both the repetition time and a high-pass cut-off; got "
                f"t_r={t_r!r} and high_pass={high_pass!r}."
            )
        if low_pass is not None:
            warn("low_pass is not implemented for filter='cosine'")
        return "cosine", low_pass, high_pass
    if low_pass is None and high_pass is None:
        return False, low_pass, high_pass
    if t_r is None:
        raise ParameterError(
            f"t_r=None but low_pass={low_pass!r} / high_pass={high_pass!r} were given; "
            "Butterworth filtering needs the repetition time t_r (seconds)."
        )
    if low_pass is not None and high_pass is not None and high_pass >= low_pass:
        raise ParameterError(
            f"high_pass={high_pass!r} is greater than or equal to low_pass={low_pass!r}; "
            "a band-pass filter needs high_pass < low_pass."
        )
    return "butterworth", low_pass, high_pass


def _split_kwargs(kwargs):
    butter, storage_options = {}, kwargs.pop("storage_options", None)
    for key, value in kwargs.items():
        if not key.startswith("butterworth__"):
            raise ParameterTypeError(
                f"clean() got an unexpected keyword argument {key!r}; expected only "
                "butterworth__<order|padtype|padlen|copy> or storage_options."
            )
        name = key[len("butterworth__") :]
        if name not in _BUTTERWORTH_KWARGS:
            raise ParameterTypeError(
                f"{key}={value!r} is not a Butterworth option; expected one of "
                + ", ".join(f"butterworth__{n}" for n in _BUTTERWORTH_KWARGS)
                + "."
            )
        butter[name] = value
    order = check_int(
        "butterworth__order", butter.get("order", 5), low=1, expected="an integer >= 1"
    )
    padtype = butter.get("padtype", "odd")
    if padtype not in _PADTYPES:
        raise ParameterError(
            f"butterworth__padtype={padtype!r} is not valid; expected one of {_PADTYPES}."
        )
    padlen = butter.get("padlen")
    check_int(
        "butterworth__padlen", padlen, low=0, allow_none=True, expected="None or an integer >= 0"
    )
    return {"order": int(order), "padtype": padtype, "padlen": padlen}, storage_options


def _sanitize_runs(runs, n_samples):
    if runs is None:
        return [np.arange(n_samples)]
    runs = np.asarray(runs)
    if runs.ndim != 1 or runs.shape[0] != n_samples:
        raise ParameterError(
            f"runs has shape {runs.shape} but the signals have {n_samples} time points; "
            "expected one run label per volume (a 1-D array of length "
            f"{n_samples})."
        )
    return [np.flatnonzero(runs == label) for label in np.unique(runs)]


def _one_sample_mask(mask, n, where):
    mask = np.asarray(mask)
    if mask.ndim != 1:
        raise ParameterError(
            f"{where} has shape {mask.shape}; expected a 1-D array of kept volumes."
        )
    if mask.dtype == bool:
        if mask.shape[0] != n:
            raise ParameterError(
                f"{where} is a boolean mask of length {mask.shape[0]} but the run has {n} "
                "volumes; expected one True/False per volume."
            )
        mask = np.flatnonzero(mask)
    elif mask.size and mask.dtype.kind not in "iu":
        raise ParameterTypeError(
            f"{where} has dtype {mask.dtype}; expected integer indices of kept volumes or a "
            "boolean mask."
        )
    if mask.size == 0:
        raise AllVolumesRemovedError(
            f"{where} is empty: every volume of the run was removed; keep at least one volume."
        )
    mask = mask.astype(np.int64)
    if mask.min() < 0 or mask.max() >= n:
        raise ParameterError(
            f"{where} contains indices outside [0, {n - 1}] (min {mask.min()}, max "
            f"{mask.max()}); the run has {n} volumes."
        )
    if np.any(np.diff(mask) <= 0):
        raise ParameterError(
            f"{where} must list kept volumes in strictly increasing order without repeats; "
            f"got {mask!r}."
        )
    return mask


def _sanitize_sample_mask(sample_mask, run_rows, given_runs):
    if sample_mask is None:
        return [None] * len(run_rows)
    if (
        isinstance(sample_mask, (list, tuple))
        and (len(sample_mask) == 0 or all(np.ndim(m) == 1 for m in sample_mask))
        and not all(isinstance(m, (bool, np.bool_, numbers.Integral)) for m in sample_mask)
    ):
        masks = list(sample_mask)
    else:
        masks = [sample_mask]
    if len(masks) != len(run_rows):
        raise ParameterError(
            f"sample_mask has {len(masks)} mask(s) but there are {len(run_rows)} run(s); "
            "expected one array of kept volumes per run."
        )
    return [
        _one_sample_mask(
            m, len(rows), "sample_mask" if given_runs is None else f"sample_mask[{i}]"
        )
        for i, (m, rows) in enumerate(zip(masks, run_rows, strict=True))
    ]


# --------------------------------------------------------------------------- plans


def _plan_run(
    rows,
    confounds,
    keep,
    *,
    detrend,
    filter_type,
    sos,
    butter,
    high_pass,
    t_r,
    extrapolate,
    standardize_confounds,
    standardize,
):
    """Process one run's confounds eagerly and return the voxel kernel's plan."""
    n = rows.shape[0]
    conf = None if confounds is None else confounds[rows]
    if filter_type == "cosine":
        conf = tk.append_cosine_drift(conf, tk.cosine_drift(n, high_pass, t_r))
    # nilearn keys scrubbing on the filter *type*: a band collapsed by clamping still interpolates
    interpolate = keep is not None and filter_type == "butterworth"
    n_proc = n
    keep_after = keep
    if keep is not None:
        if interpolate:
            if keep.size < 2:
                raise ParameterError(
                    f"sample_mask keeps {keep.size} volume(s) of a {n}-volume run; the cubic-spline "
                    "interpolation before Butterworth filtering needs at least 2."
                )
            n_proc = n if extrapolate else int(keep[-1] - keep[0] + 1)
            if conf is not None:
                conf, keep_after = tk.interpolate_censored(conf, keep, t_r, extrapolate)
            else:
                keep_after = keep if extrapolate else keep - keep[0]
        else:
            n_proc = keep.size
            if conf is not None:
                conf = conf[keep]
    if n_proc == 1 and detrend:
        warn("Detrending of 3D signal has been requested but would lead to zero values. Skipping.")
    if sos is not None:
        edge = tk.filtfilt_padlen(sos, butter["padtype"], butter["padlen"])
        if n_proc <= edge:
            raise ParameterError(
                f"a run has {n_proc} volumes to filter but the Butterworth filter pads {edge} "
                "samples at each end (butterworth__padlen); expected more than "
                f"{edge} volumes. Use a longer run, a smaller butterworth__padlen, or no filter."
            )
    q = None
    if conf is not None:
        conf = np.array(conf, dtype=np.float64)
        if detrend:
            conf = tk.detrend(conf)
        if sos is not None:
            conf = tk.butterworth_apply(conf, sos, butter["padtype"], butter["padlen"])
        if interpolate:
            conf = conf[keep_after]
        q = tk.confound_basis(tk.scale_confounds(conf, standardize_confounds))
    n_out = n if keep is None else keep.size
    if n_out == 1 and standardize is not None:
        warn(
            "Standardization of 3D signal has been requested but would lead to zero values. Skipping."
        )
    return tk.RunPlan(
        rows=rows,
        keep=keep,
        interpolate=interpolate,
        extrapolate=extrapolate,
        t_r=t_r,
        detrend=detrend,
        sos=sos,
        padtype=butter["padtype"],
        padlen=butter["padlen"],
        q=q,
        standardize=standardize,
        n_out=n_out,
    )


def _plan_token(plans):
    """What identifies the plans in the graph's keys: every field of every plan.

    Read from the dataclass fields, so a field added to ``RunPlan`` later is part of it.
    """
    return [tuple(getattr(p, f.name) for f in dataclasses.fields(p)) for p in plans]


# --------------------------------------------------------------------------- public API


def _time_by_features(name, x):
    """``x`` as a 2-D (time points, features) array, numpy unless it is a dask array already;
    returns it and whether it is dask."""
    is_dask = isinstance(x, da.Array)
    if not is_dask:
        x = np.asarray(x)
    if x.ndim != 2:
        raise DimensionError(
            f"{name} has shape {x.shape}; expected a 2-D array (time points, features)."
        )
    return x, is_dask


def clean(
    signals,
    runs=None,
    detrend=True,
    standardize="zscore_sample",
    sample_mask=None,
    confounds=None,
    standardize_confounds=True,
    filter="butterworth",
    low_pass=None,
    high_pass=None,
    t_r=2.5,
    ensure_finite=False,
    extrapolate=False,
    **kwargs,
):
    """Improve SNR on masked fMRI signals (nilearn's ``signal.clean``, lazily on dask arrays).

    Order of operations (per run), as in nilearn 0.14.1: cosine drift regressors (with
    ``filter="cosine"``) -> scrubbing (cubic-spline interpolation of censored volumes with
    Butterworth, removal otherwise) -> linear detrend -> Butterworth filter (then censored
    volumes removed) -> confound projection (confounds go through the same detrend/filter,
    are z-scored or max-scaled, then a pivoted QR) -> standardize.

    Parameters
    ----------
    signals : numpy.ndarray or dask.array.Array, shape (n_samples, n_features)
        Time series, time first. Never modified. A dask array may have any chunks; it is
        rechunked to one chunk along time.
    runs : array of shape (n_samples,), optional
        Run label of each volume. Each run is cleaned independently and the results are
        stacked in ascending label order (as nilearn does).
    detrend : bool, default=True
        Remove the linear trend (and the mean) of signals and confounds.
    standardize : {'zscore_sample', 'psc', None} or bool, default='zscore_sample'
        ``True``/``False`` are accepted with nilearn's ``FutureWarning`` and mean
        ``'zscore_sample'``/``None``.
    sample_mask : array of kept volume indices, boolean array, or list of those (one per run)
        Scrubbing (see Notes). Indices must be strictly increasing.
    confounds : ndarray, dask array, pandas.DataFrame, str, os.PathLike, or list of those
        Regressors of shape (n_samples, n_confounds). Paths may be fsspec URLs (pass
        ``storage_options=`` as a keyword). See Notes for missing values. A (small) dask
        array, e.g. lazy high-variance confounds, stays lazy when ``signals`` is a dask
        array: the confound processing then runs inside the graph, once, and its warnings
        and value errors appear at compute time.
    standardize_confounds : bool, default=True
        Z-score confounds before the projection; if False they are divided by their
        maximum absolute value (not demeaned).
    filter : {'butterworth', 'cosine', False}, default='butterworth'
    low_pass, high_pass : float or None
        Cut-off frequencies in Hz. Cut-offs at or above Nyquist are lowered just below it
        with a ``UserWarning`` (as nilearn does); cut-offs <= 0 are an error.
    t_r : float or None, default=2.5
        Repetition time in seconds (nilearn's default: filtering silently assumes 2.5 s).
    ensure_finite : bool, default=False
        Replace NaN and infinite values of the signals by 0 first.
    extrapolate : bool, default=False
        With Butterworth and ``sample_mask``: extrapolate the spline to censored volumes at
        both ends instead of leaving them out of the filtering.
    **kwargs
        ``butterworth__order`` (5), ``butterworth__padtype`` ('odd'),
        ``butterworth__padlen`` (None: scipy's default), ``butterworth__copy`` (ignored);
        ``storage_options`` (dict, lazyconn only) for confound URLs. Other names are an
        error (nilearn ignores them silently).

    Returns
    -------
    numpy.ndarray or dask.array.Array, shape (n_kept_samples, n_features)
        float32 for float32 (or small-integer) input, float64 for float64 input. Lazy
        (nothing computed, no voxel read) for dask input.

    Notes
    -----
    Differences from nilearn 0.14.1, all deliberate:

    * **Scrubbing with Butterworth interpolates exactly the censored volumes.** nilearn
      overwrites volumes ``T-1-i`` for every kept volume ``i`` (bitwise NOT of an integer
      index array), so a censored volume whose mirror ``T-1-t`` is also censored keeps its
      raw value, and with ``extrapolate=False`` the output can be shifted by one volume.
      Both agree whenever every censored volume's mirror is kept.
    * **Runs forward every option.** nilearn's per-run recursion drops
      ``standardize_confounds`` (reverting to True), ``extrapolate`` (False) and the
      ``butterworth__*`` options; lazyconn applies them to every run.
    * **Confounds with ``n/a`` in their first row** (fMRIPrep derivative columns,
      ``framewise_displacement``) are filled with the second-row value, as
      ``nilearn.interfaces.fmriprep.load_confounds`` does; nilearn's ``clean`` would fail.
      Any other non-finite confound value is an error naming the column and row.
    * **Numerically dependent confounds are dropped by a relative rank tolerance.** nilearn
      keeps a QR column when ``|R_kk| > 100 eps`` (absolute); on z-scored confounds that
      lets rounding-noise directions through (e.g. confounds that band-pass filtering makes
      linearly dependent), so nilearn projects out a random, summation-order-dependent
      vector. lazyconn also requires ``|R_kk| > max|R_jj| max(T, C) eps``; with
      well-conditioned confounds both keep the same columns.
    * Clear errors (not scipy's) for: ``t_r=None`` with a cut-off, ``high_pass >=
      low_pass``, cut-offs <= 0, runs too short for the filter padding, sample masks out of
      range or unsorted, confound row-count mismatch, runs length mismatch, unknown kwargs.
    * ``standardize='psc'`` on a dask array needs two passes over the data: nilearn
      decides from *all* features whether to add the pre-cleaning mean back.
    * Computations run in float64 inside each chunk and are cast to the output dtype at
      the end (nilearn computes float32 input partly in float32), so float32 results are
      at least as close to nilearn's float64 results as nilearn's own float32 results.
    """
    signals, is_dask = _time_by_features("signals", signals)
    if signals.dtype.kind not in "fiub":
        raise ParameterTypeError(f"signals has dtype {signals.dtype}; expected a numeric array.")
    setup = _Cleaning(
        int(signals.shape[0]),
        signals.dtype,
        is_dask,
        runs=runs,
        detrend=detrend,
        standardize=standardize,
        sample_mask=sample_mask,
        confounds=confounds,
        standardize_confounds=standardize_confounds,
        filter=filter,
        low_pass=low_pass,
        high_pass=high_pass,
        t_r=t_r,
        ensure_finite=ensure_finite,
        extrapolate=extrapolate,
        **kwargs,
    )
    if not is_dask:
        return setup(signals)
    plans, plans_token, ensure_finite = setup.plans, setup.plans_token, setup.ensure_finite
    out_dtype, n_out, standardize = setup.out_dtype, setup.n_out, setup.standardize
    run_rows, lazy_confounds = setup.run_rows, setup.lazy_confounds

    x = tk.single_time_chunk(signals)
    token = tokenize(x.name, plans_token, ensure_finite, str(out_dtype))
    if not lazy_confounds:
        # One graph key for the plans (Q can be T x 100s): tasks share it instead of each
        # carrying a copy to the workers.
        plans = dask.delayed(plans, pure=True, traverse=False, name=f"clean-plans-{token}")
    psc_flags = None
    if standardize == "psc":
        stats = _psc_stats(x, plans, len(run_rows), ensure_finite, token)
        psc_flags = dask.delayed(_flags_from_stats)(stats)
    return tk.map_time_blocks(
        tk.clean_block,
        x,
        n_out,
        out_dtype,
        name=f"clean-{token}",
        plans=plans,
        ensure_finite=ensure_finite,
        out_dtype=out_dtype,
        psc_flags=psc_flags,
    )


class _Cleaning:
    """``clean``'s checks and confound plans for (n_samples, ...) signals of ``dtype``;
    calling it cleans numpy signals (any columns of them: every step works column by
    column, except ``'psc'``, which decides on all the columns it is given)."""

    def __init__(
        self,
        n_samples,
        dtype,
        is_dask,
        runs=None,
        detrend=True,
        standardize="zscore_sample",
        sample_mask=None,
        confounds=None,
        standardize_confounds=True,
        filter="butterworth",
        low_pass=None,
        high_pass=None,
        t_r=2.5,
        ensure_finite=False,
        extrapolate=False,
        **kwargs,
    ):
        butter, storage_options = _split_kwargs(dict(kwargs))
        detrend = _check_bool("detrend", detrend)
        standardize_confounds = _check_bool("standardize_confounds", standardize_confounds)
        ensure_finite = _check_bool("ensure_finite", ensure_finite)
        extrapolate = _check_bool("extrapolate", extrapolate)
        if confounds is not None and not detrend and not standardize_confounds:
            warn(
                "When confounds are provided, one must perform detrend and/or standardize "
                f"confounds. You provided detrend={detrend}, standardize_confounds="
                f"{standardize_confounds}. If confounds were not standardized or demeaned before "
                "passing to signal.clean signal will not be correctly cleaned."
            )
        filter_type, low_pass, high_pass = _check_filter(filter, low_pass, high_pass, t_r)
        standardize = _check_standardize(standardize)

        out_dtype = float_dtype_for(np.dtype(dtype))

        run_rows = _sanitize_runs(runs, n_samples)
        masks = _sanitize_sample_mask(sample_mask, run_rows, runs)
        lazy_confounds = _check_lazy_confounds(confounds, n_samples)
        if lazy_confounds and not is_dask:
            confounds = dask.compute(confounds)[0]  # numpy signals: everything eager
            lazy_confounds = False

        sos = None
        if filter_type == "butterworth":
            sos = tk.butterworth_sos(t_r, low_pass, high_pass, butter["order"])
        options = dict(
            detrend=detrend,
            filter_type=filter_type,
            sos=sos,
            butter=butter,
            high_pass=high_pass,
            t_r=t_r,
            extrapolate=extrapolate,
            standardize_confounds=standardize_confounds,
            standardize=standardize,
        )
        n_out = sum(
            rows.size if keep is None else keep.size
            for rows, keep in zip(run_rows, masks, strict=True)
        )

        if lazy_confounds:
            # Small lazy confounds (e.g. high-variance confounds of the same run): the plan is
            # built inside the graph, once, from their computed values.
            plans = dask.delayed(_build_plans, pure=True)(
                confounds, n_samples, storage_options, run_rows, masks, options
            )
            plans_token = plans.key
        else:
            plans = _build_plans(confounds, n_samples, storage_options, run_rows, masks, options)
            plans_token = _plan_token(plans)
        self.plans, self.plans_token, self.ensure_finite = plans, plans_token, ensure_finite
        self.out_dtype, self.n_out, self.standardize = out_dtype, n_out, standardize
        self.run_rows, self.lazy_confounds = run_rows, lazy_confounds

    def __call__(self, signals: np.ndarray, out=None) -> np.ndarray:
        return tk.clean_block(
            signals,
            self.plans,
            ensure_finite=self.ensure_finite,
            out_dtype=self.out_dtype,
            out=out,
        )


def column_cleaner(n_samples: int, dtype, **kwargs):
    """``clean`` with the given arguments as a function of numpy columns: ``f(x)`` equals
    ``clean(signals, **kwargs)[:, cols]`` for ``x = signals[:, cols]``, with the checks and
    the confound processing done once (lazy confounds computed now).

    Parameters
    ----------
    n_samples : int
        Time points of the signals.
    dtype : numpy dtype
        dtype of the signals.
    **kwargs
        :func:`clean`'s arguments but ``signals`` (``standardize='psc'`` is refused: its
        choice depends on all the columns at once).

    Returns
    -------
    callable
        (n_samples, n) numpy -> (n_kept_samples, n) numpy; its ``n_out`` and
        ``out_dtype`` attributes give the output's rows and dtype. An ``out=`` array
        (n_kept_samples, n) receives the result instead (cast to its dtype), and may be
        the signals themselves (cleaned in place).
    """
    setup = _Cleaning(int(n_samples), np.dtype(dtype), False, **kwargs)
    if setup.standardize == "psc":
        raise ParameterError(
            "standardize='psc' cannot clean columns apart: whether the mean is added back "
            "is decided from all the features at once; expected another standardize."
        )
    return setup


def _build_plans(confounds, n_samples, storage_options, run_rows, masks, options):
    confounds = sanitize_confounds(confounds, n_samples, storage_options=storage_options)
    return tuple(
        _plan_run(rows, confounds, keep, **options)
        for rows, keep in zip(run_rows, masks, strict=True)
    )


def _check_lazy_confounds(confounds, n_samples):
    """True if some confounds are dask arrays; their shapes are checked now (values later)."""
    items = confounds if isinstance(confounds, (list, tuple)) else [confounds]
    lazy = False
    for i, item in enumerate(items):
        if not isinstance(item, da.Array):
            continue
        lazy = True
        where = f"confounds[{i}]" if isinstance(confounds, (list, tuple)) else "confounds"
        if item.ndim not in (1, 2):
            raise DimensionError(
                f"{where} is an array of shape {item.shape}; expected 1-D (one regressor) or "
                "2-D (time points x regressors)."
            )
        if item.shape[0] != n_samples:
            raise ParameterError(
                f"{where} has {item.shape[0]} rows but the signals have {n_samples} time "
                "points; expected one confound row per volume."
            )
    return lazy


def _psc_stats(x, plans, n_runs, ensure_finite, token):
    """Per-run sums of |mean(clean)| and |original mean| over all features (lazy, (2 n_runs,))."""
    per_block = da.map_blocks(
        tk.psc_stats_block,
        x,
        plans=plans,
        ensure_finite=ensure_finite,
        chunks=((2 * n_runs,), (1,) * x.numblocks[1]),
        dtype=np.float64,
        meta=np.empty((0, 0)),
        name=f"clean-psc-stats-{token}",
    )
    return per_block.sum(axis=1)


def _flags_from_stats(stats):
    return np.array([tk.psc_restore_flag(a, b) for a, b in np.asarray(stats).reshape(-1, 2)])


def butterworth(
    signals,
    sampling_rate,
    low_pass=None,
    high_pass=None,
    order=5,
    padtype="odd",
    padlen=None,
    copy=False,
):
    """nilearn's ``signal.butterworth`` on a (T, F) or (T,) array (numpy or dask).

    Returns a new array (numpy input is never modified in place, unlike nilearn's
    ``copy=False``; ``copy`` is accepted for compatibility). A cut-off <= 0 is a
    ParameterError (a ValueError): nilearn warns and replaces a negative one by machine
    epsilon, which is never what was meant.

    Parameters
    ----------
    signals : (T, F) or (T,) numpy or dask array
        Time series, time along the first axis (a dask array is filtered per column chunk,
        the time axis whole).
    sampling_rate : float
        Samples per second (1 / t_r), > 0.
    low_pass, high_pass : float, optional
        Cut-off frequencies (Hz); ``None`` switches that side of the filter off.
    order : int, default=5
        Order of the Butterworth filter (second-order sections, zero-phase ``sosfiltfilt``).
    padtype : {"odd", "even", "constant", None}, default="odd"
        Padding of ``scipy.signal.sosfiltfilt``.
    padlen : int, optional
        Padding length of ``sosfiltfilt`` (its default when None).
    copy : bool, default=False
        Accepted for nilearn parity, no effect: the input is never modified.

    Returns
    -------
    numpy or dask array
        Same shape as ``signals``.
    """
    check_real(
        "sampling_rate",
        sampling_rate,
        low=0,
        low_inclusive=False,
        expected="a frequency in Hz > 0",
    )
    low_pass = _check_cutoff("low_pass", low_pass)
    high_pass = _check_cutoff("high_pass", high_pass)
    if low_pass is not None and high_pass is not None and high_pass >= low_pass:
        raise ParameterError(
            f"high_pass={high_pass!r} is greater than or equal to low_pass={low_pass!r}; "
            "a band-pass filter needs high_pass < low_pass."
        )
    butter, _ = _split_kwargs(
        {
            "butterworth__order": order,
            "butterworth__padtype": padtype,
            "butterworth__padlen": padlen,
        }
    )
    sos = tk.butterworth_sos(1.0 / sampling_rate, low_pass, high_pass, butter["order"])
    is_dask = isinstance(signals, da.Array)
    if not is_dask:
        signals = np.asarray(signals)
    dtype = float_dtype_for(signals.dtype)
    if sos is None:
        return signals.astype(dtype, copy=True)
    edge = tk.filtfilt_padlen(sos, padtype, padlen)
    if signals.shape[0] <= edge:
        raise ParameterError(
            f"signals has {signals.shape[0]} time points but the filter pads {edge} samples "
            "at each end (padlen); expected more."
        )

    def kernel(block):
        return tk.butterworth_apply(
            np.asarray(block, dtype=np.float64), sos, padtype, padlen
        ).astype(dtype)

    if not is_dask:
        return kernel(signals)
    if signals.ndim == 1:
        return da.from_delayed(dask.delayed(kernel)(signals), signals.shape, dtype=dtype)
    return tk.map_time_blocks(
        kernel,
        signals,
        signals.shape[0],
        dtype,
        name=f"butterworth-{tokenize(signals.name, sos, padtype, padlen)}",
    )


# --------------------------------------------------------------------------- CompCor


def _mean_squares_detrended(block, detrend):
    x = np.array(block, dtype=np.float64)
    if detrend:
        x = tk.detrend(x)
    return (x**2).mean(axis=0)[np.newaxis]


def _gram_block(block, threshold, detrend):
    x = np.array(block, dtype=np.float64)
    if detrend:
        x = tk.detrend(x)
    x = x[:, (x**2).mean(axis=0) > threshold]
    return x @ x.T


def _top_eigenvectors(gram, n_samples, n_confounds):
    from scipy import linalg

    s, u = linalg.eigh(gram / n_samples)
    order = np.argsort(s)[::-1]
    return u[:, order[:n_confounds]].copy()


def _tree_sum(parts):
    while len(parts) > 1:
        parts = [
            dask.delayed(np.add)(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


def high_variance_confounds(series, n_confounds=5, percentile=2.0, detrend=True):
    """Confounds from the highest-variance series (CompCor-like), as nilearn computes them.

    Detrend (optional) -> per-feature mean of squares -> keep features strictly above the
    ``100 - percentile`` ``nanpercentile`` -> eigenvectors of the (T, T) Gram matrix
    ``X Xᵀ / T`` with the largest eigenvalues (``scipy.linalg.eigh``).

    Parameters
    ----------
    series : numpy.ndarray or dask.array.Array, shape (n_samples, n_features)
    n_confounds : int, default=5
    percentile : float, default=2.0
        Percentage (0-100) of highest-variance features kept.
    detrend : bool, default=True

    Returns
    -------
    numpy.ndarray or dask.array.Array, shape (n_samples, n_confounds)
        nilearn's dtype (float input keeps its dtype, e.g. float32). Computed in float64:
        the same numbers as nilearn on float64 input; on dask input the Gram matrix is
        accumulated over feature chunks (two passes: mean of squares, then Gram), so values
        agree to rounding. Signs of components are arbitrary (as in nilearn).
    """
    check_int("n_confounds", n_confounds, low=1, expected="an integer >= 1")
    check_real("percentile", percentile, low=0, high=100, expected="a number in [0, 100]")
    detrend = _check_bool("detrend", detrend)
    series, is_dask = _time_by_features("series", series)
    n_samples = int(series.shape[0])
    n_out = min(int(n_confounds), n_samples)
    out_dtype = _hv_dtype(series.dtype, detrend)
    if not is_dask:
        var = _mean_squares_detrended(series, detrend)[0]
        threshold = np.nanpercentile(var, 100.0 - percentile)
        vectors = _top_eigenvectors(
            _gram_block(series, threshold, detrend), n_samples, n_confounds
        )
        return vectors.astype(out_dtype, copy=False)

    x = tk.single_time_chunk(series)
    token = tokenize(x.name, detrend, percentile, n_confounds)
    var = da.map_blocks(
        _mean_squares_detrended,
        x,
        detrend,
        chunks=((1,), x.chunks[1]),
        dtype=np.float64,
        meta=np.empty((0, 0)),
        name=f"hvc-meansq-{token}",
    )[0]
    threshold = dask.delayed(np.nanpercentile)(var, 100.0 - percentile)
    grams = [
        dask.delayed(_gram_block)(block, threshold, detrend) for block in x.to_delayed().ravel()
    ]
    vectors = dask.delayed(_top_eigenvectors)(_tree_sum(grams), n_samples, n_confounds)
    return da.from_delayed(vectors, (n_samples, n_out), dtype=np.float64).astype(out_dtype)


def _hv_dtype(dtype, detrend: bool) -> np.dtype:
    """nilearn's result dtype: float input keeps its dtype; detrending makes ints float32
    (float64 for 8-byte ints); without detrending the eigenvectors of ints are float64."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype
    if detrend and dtype.itemsize < 8:
        return np.dtype(np.float32)
    return np.dtype(np.float64)
