"""Temporal kernels of ``signal.clean``: pure numpy/scipy functions on one (T, V) block.

Every kernel works column by column along the time axis (axis 0), so applying it to a
voxel chunk that holds the whole time axis gives exactly what it gives on the full array.
The maths follow nilearn 0.14.1 ``signal.py`` (see the reference notes, section 1).

The graph builder at the bottom (:func:`map_time_blocks`) turns one of these kernels into
a single ``map_blocks`` over voxel chunks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
from scipy import linalg
from scipy import signal as sp_signal
from scipy.interpolate import CubicSpline

from lazyconn._utils import rechunk, warn
from lazyconn.exceptions import ParameterError

_EPS64 = np.finfo(np.float64).eps
_EPS32 = np.finfo(np.float32).eps

STANDARDIZE_METHODS = ("zscore_sample", "psc")


# --------------------------------------------------------------------------- kernels


def detrend(x: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Linear detrend of each column (mean removed, then the normalised ramp), in place.

    nilearn's ``_detrend``: ``x -= mean``; ``x -= r (r.T x)`` with r the centred ramp scaled
    to unit norm. Length-1 series are returned unchanged (the caller warns). ``scratch``
    (x's shape) takes the ramp's outer product instead of a new array: the same numbers.
    """
    n = x.shape[0]
    if n == 1:
        return x
    x -= x.mean(axis=0)
    ramp = np.arange(n, dtype=x.dtype)
    ramp -= ramp.mean()
    norm = np.sqrt((ramp**2).sum())
    if not norm < _EPS64:
        ramp /= norm
    if scratch is None:
        x -= np.outer(ramp, ramp @ x)
    else:
        x -= np.multiply(ramp[:, None], ramp @ x, out=scratch)  # np.outer's products
    return x


def zscore_sample(
    x: np.ndarray, *, inplace: bool = False, scratch: np.ndarray | None = None
) -> np.ndarray:
    """``(x - mean) / std`` with ddof=1; columns with std < float64 eps are only demeaned.

    ``inplace``: ``x`` (floating) is overwritten and returned. ``scratch`` (x's shape and
    memory layout) takes the squared deviations of the standard deviation instead of a
    new array: numpy's ``std`` step by step, the same numbers.
    """
    if x.shape[0] == 1:
        return x
    mean = x.mean(axis=0)
    if inplace:
        x -= mean
    else:
        x = x - mean
    if scratch is None or scratch.strides != x.strides:
        std = x.std(axis=0, ddof=1)
    else:
        std = _std_ddof1(x, scratch)
    std[std < _EPS64] = 1.0
    x /= std
    return x


def _std_ddof1(x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``x.std(axis=0, ddof=1)`` as numpy computes it (``numpy._core._methods._var``: the
    same sums over the same memory layout, hence the same bits), the deviations in
    ``scratch``."""
    n = x.shape[0]
    mean = np.add.reduce(x, axis=0, keepdims=True)
    np.true_divide(mean, np.intp(n), out=mean, casting="unsafe")
    dev = np.subtract(x, mean, out=scratch)
    np.square(dev, out=dev)
    var = np.add.reduce(dev, axis=0)
    np.true_divide(var, np.intp(max(n - 1, 0)), out=var, casting="unsafe")
    return np.sqrt(var, out=var)


def percent_signal_change(x: np.ndarray, *, warn_zero_mean: bool = True) -> np.ndarray:
    """``100 (x - m) / |m|`` with m the temporal mean; columns with |m| < eps become 0."""
    if x.shape[0] == 1:
        return x
    mean = x.mean(axis=0)
    invalid = np.abs(mean) < _EPS64
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (x - mean) / np.abs(mean)
    x *= 100
    if np.any(invalid):
        if warn_zero_mean:
            # Same text as nilearn (data-dependent, so it can fire inside a dask task).
            warnings.warn(
                "psc standardization strategy is meaningless for features that have a "
                "mean of 0. These time series are set to 0.",
                UserWarning,
                stacklevel=2,
            )
        x[:, invalid] = 0
    return x


def standardize(
    x: np.ndarray, method: str | None, *, inplace: bool = False, scratch=None
) -> np.ndarray:
    """Apply ``"zscore_sample"``, ``"psc"`` or nothing (``None``); ``inplace`` and
    ``scratch`` as :func:`zscore_sample`'s (psc ignores them)."""
    if method is None:
        return x
    if method == "zscore_sample":
        return zscore_sample(x, inplace=inplace, scratch=scratch)
    if method == "psc":
        return percent_signal_change(x)
    raise ParameterError(
        f"standardize={method!r} is not valid; expected one of {STANDARDIZE_METHODS}."
    )


def scale_confounds(confounds: np.ndarray, standardize_confounds: bool) -> np.ndarray:
    """nilearn's confound scaling before the QR: z-score, or divide by max |value| (no demeaning)."""
    if standardize_confounds:
        return zscore_sample(confounds)
    confounds = confounds.copy()
    top = np.max(np.abs(confounds), axis=0)
    top[top == 0] = 1
    confounds /= top
    return confounds


def confound_basis(confounds: np.ndarray) -> np.ndarray:
    """Orthonormal basis Q of the confound span (QR with pivoting).

    A column is kept when ``|R_kk|`` exceeds nilearn's absolute tolerance (100 eps) *and*
    ``max|R_jj| * max(T, C) * eps`` (numpy's ``matrix_rank`` rule). nilearn uses only the
    first: on z-scored confounds (norm ~ sqrt(T)) it keeps directions that are rounding
    noise, e.g. linearly dependent confounds after band-pass filtering, and projects out a
    random vector that depends on summation order.
    """
    q, r, _ = linalg.qr(confounds, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    tol = max(_EPS64 * 100.0, diag.max(initial=0.0) * max(confounds.shape) * _EPS64)
    return q[:, diag > tol]


def project_out(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``x - Q (Q.T x)``, in place."""
    x -= q @ (q.T @ x)
    return x


def check_cutoff(kind: str, freq: float, nyquist: float) -> float:
    """nilearn's ``_check_wn``: a cut-off at or above Nyquist is lowered just below it (warning)."""
    if freq >= nyquist:
        lowered = nyquist - nyquist * 10 * _EPS32
        warn(
            f"{kind}_pass={freq!r} Hz is at or above the Nyquist frequency {nyquist} Hz "
            f"(= 1 / (2 * t_r)); it has been lowered to {lowered} Hz, as nilearn does. "
            f"Use a {kind}_pass below {nyquist} Hz or check t_r."
        )
        return lowered
    return freq


def butterworth_sos(t_r: float, low_pass=None, high_pass=None, order: int = 5):
    """Design nilearn's Butterworth filter as second-order sections, or ``None`` if no filter.

    Low-pass, high-pass or band-pass ``[high_pass, low_pass]`` of order ``order``
    (``scipy.signal.butter(..., output="sos", fs=1 / t_r)``), after nilearn's clamping of
    cut-offs at or above Nyquist.
    """
    if low_pass is None and high_pass is None:
        return None
    fs = 1.0 / t_r
    nyquist = fs * 0.5
    critical = []
    if high_pass is not None:
        btype = "high"
        critical.append(check_cutoff("high", high_pass, nyquist))
    if low_pass is not None:
        btype = "low"
        critical.append(check_cutoff("low", low_pass, nyquist))
    if len(critical) == 2:
        btype = "band"
        if critical[0] == critical[1]:
            warn(
                "Signals are returned unfiltered because the band-pass cut-offs are equal "
                f"after clamping to the Nyquist frequency (high_pass={high_pass}, "
                f"low_pass={low_pass}, t_r={t_r}). Please check that t_r, low_pass and "
                "high_pass are valid."
            )
            return None
    else:
        critical = critical[0]
    return sp_signal.butter(N=order, Wn=critical, btype=btype, output="sos", fs=fs)


def filtfilt_padlen(sos: np.ndarray, padtype="odd", padlen=None) -> int:
    """Number of samples ``scipy.signal.sosfiltfilt`` pads at each end (its default rule)."""
    if padtype is None:
        return 0
    if padlen is not None:
        return int(padlen)
    ntaps = 2 * sos.shape[0] + 1
    ntaps -= min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * ntaps


def butterworth_apply(x: np.ndarray, sos: np.ndarray, padtype="odd", padlen=None) -> np.ndarray:
    """Zero-phase filtering of each column (``sosfiltfilt`` along time)."""
    # scipy's IIR loop is ~2x faster along a contiguous axis: filter the transpose.
    xt = np.ascontiguousarray(x.T)
    return sp_signal.sosfiltfilt(sos, xt, axis=-1, padtype=padtype, padlen=padlen).T


def cosine_drift(n_samples: int, high_pass: float, t_r: float) -> np.ndarray:
    """DCT-II drift regressors up to ``high_pass`` Hz, without the constant (nilearn's rule).

    ``order = min(n - 1, floor(2 n high_pass t_r))`` columns
    ``sqrt(2/n) cos(pi/n (t + 0.5) k)``, k = 1..order.
    """
    if high_pass * t_r >= 0.5:
        warn(
            "High-pass filter will span all accessible frequencies and saturate the design "
            f"matrix (high_pass={high_pass} Hz >= 1 / (2 * t_r) = {0.5 / t_r} Hz). "
            "You may want to reduce the high_pass value."
        )
    order = int(min(n_samples - 1, int(np.floor(2 * n_samples * high_pass * t_r))))
    times = np.arange(n_samples)
    k = np.arange(1, order + 1)
    return np.sqrt(2.0 / n_samples) * np.cos((np.pi / n_samples) * (times[:, None] + 0.5) * k)


def append_cosine_drift(confounds, drift: np.ndarray):
    """Append ``drift`` to ``confounds`` unless a user column already correlates > 0.9 with one."""
    n_cos = drift.shape[1]
    if n_cos == 0:
        warn(
            "Cosine filter was not created. The time series might be too short or the "
            "high pass filter is not suitable for the data."
        )
        return confounds
    if confounds is None:
        return drift.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(drift.T, confounds.T)
    np.fill_diagonal(corr, 0)
    if np.sum(corr[:n_cos, :].ravel() > 0.9) > 0:
        warn(
            "Cosine filter(s) exist in user supplied confounds. Use user supplied regressors only."
        )
        return confounds
    return np.hstack((confounds, drift))


def interpolate_censored(
    x: np.ndarray, keep: np.ndarray, t_r: float, extrapolate: bool, *, inplace: bool = False
):
    """Replace the censored frames of ``x`` by a cubic spline through the kept frames.

    Returns ``(x_filled, keep_shifted)``. Without ``extrapolate``, the censored frames
    before the first and after the last kept frame cannot be interpolated and are dropped,
    and ``keep`` is shifted accordingly.

    This is what nilearn documents; nilearn 0.14.1 instead overwrites frames ``T-1-i`` for
    every kept frame i (bitwise NOT of an integer index array), see :func:`lazyconn.signal.clean`.
    """
    n = x.shape[0]
    censored = np.setdiff1d(np.arange(n), keep, assume_unique=True)
    if not extrapolate:
        censored = censored[(censored > keep[0]) & (censored < keep[-1])]
    if not inplace:
        x = np.array(x, dtype=np.float64, copy=True)
    if censored.size:
        times = np.arange(n) * t_r
        spline = CubicSpline(times[keep], x[keep], axis=0, extrapolate=extrapolate)
        x[censored] = spline(times[censored])
    if not extrapolate:
        x = x[keep[0] : keep[-1] + 1]
        keep = keep - keep[0]
    return x, keep


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True, eq=False)
class RunPlan:
    """Everything the voxel kernel needs for one run, prepared eagerly from small inputs.

    ``rows`` are the input rows of the run; ``keep`` the kept frames (``sample_mask``,
    relative to the run) or ``None``; ``q`` the confound basis on the output frames.
    """

    rows: np.ndarray
    keep: np.ndarray | None
    interpolate: bool
    extrapolate: bool
    t_r: float | None
    detrend: bool
    sos: np.ndarray | None
    padtype: str | None
    padlen: int | None
    q: np.ndarray | None
    standardize: str | None
    n_out: int = field(default=0)


def clean_run_before_standardize(x: np.ndarray, plan: RunPlan, work=None):
    """Steps 2-6 of nilearn's ``clean`` on one run: returns ``(x, original_mean)`` in float64.

    ``x`` is never modified (one float64 working copy is made: into ``work[0]`` when
    given, a Fortran-ordered float64 array of x's shape, and ``x`` is too; ``work[1]``,
    the same, is the steps' scratch).
    """
    keep = plan.keep
    x = np.asarray(x)
    work = work if work is not None and _fits(work, x) else None
    if keep is not None and not plan.interpolate:
        # no filter / cosine: censored frames leave before anything else
        x = x[keep].astype(np.float64, copy=False)
        work = None
    elif work is not None:
        np.copyto(work[0], x, casting="same_kind")
        x = work[0]
    else:
        x = np.array(x, dtype=np.float64, copy=True)
    if keep is not None and plan.interpolate:
        x, keep = interpolate_censored(x, keep, plan.t_r, plan.extrapolate, inplace=True)
    original_mean = x.mean(axis=0)
    if plan.detrend:
        x = detrend(x, None if work is None else work[1])
    if plan.sos is not None:
        x = butterworth_apply(x, plan.sos, plan.padtype, plan.padlen)
    if keep is not None and plan.interpolate:
        x = x[keep]  # censored frames leave after filtering (even if the filter was a no-op)
    if plan.q is not None:
        x = project_out(x, plan.q)
    return x, original_mean


def _fits(work, x) -> bool:
    """Whether ``work`` (two float64 arrays) can hold a working copy of ``x`` in x's layout."""
    return x.flags.f_contiguous and all(w.shape == x.shape for w in work)


def psc_needs_mean(x: np.ndarray, original_mean: np.ndarray) -> tuple[float, float]:
    """The two sums nilearn compares to decide whether psc adds the original mean back."""
    return float(np.abs(x.mean(axis=0)).sum()), float(np.abs(original_mean).sum())


def psc_restore_flag(sum_clean: float, sum_original: float) -> bool:
    """nilearn: restore if mean|mean(clean)| / mean|original mean| < 0.1 (NaN/inf -> False)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return bool(np.float64(sum_clean) / np.float64(sum_original) < 1e-1)


def finish_run(
    x: np.ndarray, original_mean: np.ndarray, plan: RunPlan, restore: bool | None, scratch=None
):
    """Step 7: standardize (psc relative to the pre-cleaning mean when ``restore``). ``x``
    is the working copy of :func:`clean_run_before_standardize` (overwritten);
    ``scratch`` as :func:`zscore_sample`'s."""
    if plan.standardize is None:
        return x
    if plan.standardize == "psc":
        if restore is None:
            restore = psc_restore_flag(*psc_needs_mean(x, original_mean))
        if restore:
            x = x + original_mean
    return standardize(x, plan.standardize, inplace=True, scratch=scratch)


def _run_rows(block, plan):
    rows = plan.rows
    if rows.size == block.shape[0] and rows[-1] == rows.size - 1:
        return block  # the only run: no fancy-index copy
    return block[rows]


#: Float64 bytes per piece of columns in :func:`clean_block`: its working copies and
#: temporaries are a few pieces (~2 MiB each), not several float64 copies of the block.
CLEAN_PIECE_BYTES = 2 << 20


def clean_block(
    block: np.ndarray,
    plans: tuple[RunPlan, ...],
    *,
    ensure_finite: bool = False,
    out_dtype=np.float64,
    psc_flags=None,
    out=None,
) -> np.ndarray:
    """The whole voxel part of ``clean`` on one (T, v) block; runs are stacked in plan order.

    Every step works column by column, so the block is cleaned in pieces of columns
    (:data:`CLEAN_PIECE_BYTES`) written into the output: the same numbers, with the
    float64 temporaries of one piece instead of the block's (a seed block of 168 x 14589
    float32 took +56 MiB at once). The pieces of a one-run block (Fortran order, as
    :func:`lazyconn.ops.voxels.gather` and the streamed columns give them) are cleaned in
    two float64 buffers made once, in place step after step: fresh temporaries for every
    piece and step cost a seed study's reductions ~1.5 s of page faults (~60 MB faulted
    per subject). psc without ``psc_flags`` decides on the whole block, so it is not split.

    ``out`` (n_out, v), optional: the array the result is written into (cast to its
    dtype) and returned; it may be ``block`` itself (each piece is copied to float64
    before its result is written back: a streamed group cleaned in place).
    """
    block = np.asarray(block)
    n_t, n_v = block.shape
    step = max(1, CLEAN_PIECE_BYTES // max(1, 8 * n_t))
    if n_v <= step or (psc_flags is None and any(p.standardize == "psc" for p in plans)):
        if out is None:
            return _clean_columns(block, plans, ensure_finite, out_dtype, psc_flags)
        np.copyto(out, _clean_columns(block, plans, ensure_finite, None, psc_flags), "unsafe")
        return out
    work = None
    if len(plans) == 1 and block.flags.f_contiguous:
        work = tuple(np.empty((n_t, step), order="F") for _ in range(2))
    for c0 in range(0, n_v, step):
        n = min(step, n_v - c0)
        piece = _clean_columns(
            block[:, c0 : c0 + n],
            plans,
            ensure_finite,
            None,
            psc_flags,
            None if work is None else tuple(w[:, :n] for w in work),
        )
        if out is None:  # F order, as a whole block's result (column-wise arithmetic keeps it)
            out = np.empty((piece.shape[0], n_v), dtype=out_dtype, order="F")
        np.copyto(out[:, c0 : c0 + n], piece, casting="unsafe")  # astype's cast
    return out


def _clean_columns(block, plans, ensure_finite, out_dtype, psc_flags, work=None):
    """Cleaned columns (``out_dtype``; None: float64, possibly ``work[0]`` itself)."""
    if ensure_finite:
        block = np.where(np.isfinite(block), block, 0)
    outs = []
    for i, plan in enumerate(plans):
        x, mean = clean_run_before_standardize(_run_rows(block, plan), plan, work)
        restore = None if psc_flags is None else bool(np.asarray(psc_flags)[i])
        outs.append(finish_run(x, mean, plan, restore, None if work is None else work[1]))
    out = outs[0] if len(outs) == 1 else np.vstack(outs)
    return out if out_dtype is None else out.astype(out_dtype, copy=False)


def psc_stats_block(block: np.ndarray, plans: tuple[RunPlan, ...], *, ensure_finite=False):
    """Per-run partial sums for the psc decision, shape (2 n_runs, 1): [clean_0, orig_0, ...]."""
    block = np.asarray(block)
    if ensure_finite:
        block = np.where(np.isfinite(block), block, 0)
    stats = np.zeros((2 * len(plans), 1))
    for i, plan in enumerate(plans):
        x, mean = clean_run_before_standardize(_run_rows(block, plan), plan)
        stats[2 * i : 2 * i + 2, 0] = psc_needs_mean(x, mean)
    return stats


# --------------------------------------------------------------------------- graphs


def single_time_chunk(x: da.Array) -> da.Array:
    """Rechunk a (T, V) dask array so each chunk holds the whole time axis."""
    return x if len(x.chunks[0]) == 1 else rechunk(x, {0: -1})


def map_time_blocks(kernel, x: da.Array, n_out: int, dtype, *, name: str, **kwargs) -> da.Array:
    """One ``map_blocks`` over voxel chunks of a (T, V) array; output has ``n_out`` rows."""
    x = single_time_chunk(x)
    return da.map_blocks(
        kernel,
        x,
        chunks=((n_out,), x.chunks[1]),
        dtype=dtype,
        meta=np.empty((0, 0), dtype=dtype),
        name=name,
        **kwargs,
    )
