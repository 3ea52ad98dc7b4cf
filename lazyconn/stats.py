"""Lazy voxelwise statistics: scipy's t-tests on dask arrays, and on images by condition.

Two levels:

- array level, with scipy's names and signatures: :func:`ttest_ind` and :func:`ttest_1samp`
  accept dask (or numpy) arrays and return lazy results, so the nilearn-example line
  ``stats.ttest_ind(fmri_data[..., labels == "face"], fmri_data[..., labels == "house"],
  axis=-1)`` with ``from lazyconn import stats`` builds a graph instead of loading the run;
- image level: :func:`ttest_ind_img` and :func:`ttest_1samp_img` take a 4-D run (or several
  runs) and per-volume condition labels, and return t, p and df maps as LazyImages.

Both are reductions over the tested axis, chunk by chunk (``lazyconn.ops.stats``): every
input chunk is read once, nothing is rechunked, and memory is bounded by a few chunks
whatever the length of the runs. Samples that are volumes of one run, selected from its
:class:`~lazyconn.image.RunArray` (``get_data(img, compute=False)``, as in the seed) or by
the image-level functions, are reduced from the run itself: one task per chunk computes
every sample's moments from the chunk's volumes (no per-sample copy of the chunk). Moments are accumulated in float64 and merged across
chunks with a pairwise (Chan) update, so the results equal scipy's on the same data up to
float64 rounding; results are returned in scipy's dtype (float32 for float32 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np

from lazyconn._utils import check_in, rechunk
from lazyconn.exceptions import DimensionError, ParameterError, ParameterTypeError
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._load import load
from lazyconn.image._niimg import check_same_fov, load_4d, new_img_like
from lazyconn.image._runarray import RunArray, selections_data, volume_selection
from lazyconn.io.writers import batch_regions
from lazyconn.ops import stats as _ops

__all__ = [
    "TtestResult",
    "compute_maps",
    "ttest_1samp",
    "ttest_1samp_img",
    "ttest_ind",
    "ttest_ind_img",
]


class TtestResult(tuple):
    """``(statistic, pvalue)`` with a ``df`` attribute, like scipy's ``TtestResult``.

    It unpacks as a pair (``t, p = ttest_ind(...)``), as scipy's result does. The entries
    are lazy dask arrays (array-level functions) or LazyImages (image-level functions);
    ``compute()`` returns the same result with numpy arrays (or nibabel images).
    """

    __slots__ = ()

    def __new__(cls, statistic, pvalue, df):
        self = super().__new__(cls, (statistic, pvalue, df))
        return self

    def __getnewargs__(self):
        return tuple(tuple.__getitem__(self, i) for i in range(3))

    def __iter__(self):
        # Unpack as scipy's two-field result; df is an attribute only.
        return iter(tuple.__getitem__(self, slice(0, 2)))

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return tuple.__getitem__(self, slice(0, 2))[index]

    @property
    def statistic(self):
        return tuple.__getitem__(self, 0)

    @property
    def pvalue(self):
        return tuple.__getitem__(self, 1)

    @property
    def df(self):
        return tuple.__getitem__(self, 2)

    def compute(self) -> TtestResult:
        """All three entries computed in one pass over the data."""
        parts = [tuple.__getitem__(self, i) for i in range(3)]
        if isinstance(parts[0], LazyImage):
            values = da.compute(*(p.data for p in parts))
            import nibabel as nib

            return TtestResult(
                *(
                    nib.Nifti1Image(v, p.affine, p.header)
                    for v, p in zip(values, parts, strict=True)
                )
            )
        return TtestResult(*da.compute(*parts))

    def __repr__(self) -> str:
        return f"TtestResult(statistic={self.statistic!r}, pvalue={self.pvalue!r}, df={self.df!r})"


# --------------------------------------------------------------------------- array level


def _as_dask(name: str, x) -> da.Array:
    if isinstance(x, da.Array):
        return x
    if isinstance(x, LazyImage):
        return x.data
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy's own message is kept
        raise ParameterTypeError(
            f"{name} of type {type(x).__name__} cannot be read as an array; expected a dask "
            "or numpy array."
        ) from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ParameterTypeError(
            f"{name} has dtype {arr.dtype}; expected an array of numbers (dask or numpy)."
        )
    return da.from_array(arr, chunks="auto")


def _result_dtype(*arrays) -> np.dtype:
    """scipy's ``xp_promote(..., force_floating=True)``: ints and bools -> float64."""
    dtype = np.result_type(*(a.dtype for a in arrays))
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def _move_axis(name: str, x: da.Array, axis) -> da.Array:
    if axis is None:
        return x.ravel()
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ParameterTypeError(f"axis={axis!r} is not valid; expected an int or None.")
    if not -x.ndim <= axis < x.ndim:
        raise ParameterError(
            f"axis={axis!r} is out of bounds for {name} with {x.ndim} dimensions "
            f"(shape {x.shape})."
        )
    # A transpose: chunks are kept, nothing is rechunked.
    return da.moveaxis(x, int(axis), -1)


def _shared_run(axis, *samples) -> tuple[da.Array, list[np.ndarray]] | None:
    """The run all samples select volumes of, when the test is along those volumes.

    Samples indexed from one run's :class:`~lazyconn.image.RunArray` (``get_data(img,
    compute=False)[..., labels == "face"]``) are reduced from the run itself, every
    sample in the same task per chunk (no per-sample copy of each chunk, one read).
    """
    selections = [volume_selection(x) for x in samples]
    if any(s is None for s in selections) or axis not in (-1, samples[0].ndim - 1):
        return None
    run = selections[0].run
    if any(s.run.name != run.name for s in selections):
        return None
    return selections_data(selections)


def _check_options(nan_policy, alternative):
    check_in("nan_policy", nan_policy, _ops.NAN_POLICIES)
    check_in("alternative", alternative, _ops.ALTERNATIVES)


def _cast(parts, dtype):
    return [p.astype(dtype) if p.dtype != dtype else p for p in parts]


def ttest_ind(
    a,
    b,
    *,
    axis=0,
    equal_var=True,
    nan_policy="propagate",
    alternative="two-sided",
    trim=0,
    method=None,
):
    """Lazy ``scipy.stats.ttest_ind``: two-sample t-test along ``axis``, chunk by chunk.

    Parameters
    ----------
    a, b : dask.array.Array or array_like
        The two samples. Their shapes must be equal except along ``axis``. numpy inputs
        are wrapped in dask arrays.
    axis : int or None, default 0
        Axis along which to test (None: the flattened arrays), as scipy.
    equal_var : bool, default True
        True: Student's test with pooled variance; False: Welch's test.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        As scipy: NaN results where a sample has a NaN, NaNs left out, or a ValueError
        (raised when the result is computed, since checking needs the data).
    alternative : {"two-sided", "less", "greater"}, default "two-sided"
        The alternative hypothesis, as scipy.
    trim, method
        Accepted for signature parity; only scipy's defaults (``trim=0``, ``method=None``)
        are supported (trimmed means and permutations need sorted or resampled data, not
        a single pass).

    Returns
    -------
    TtestResult
        ``(statistic, pvalue)`` lazy dask arrays with a ``df`` attribute, in scipy's dtype
        (the inputs' float type; float64 for integers).

    Notes
    -----
    Differences from scipy: the result is lazy (compute it, or pass it on to other dask or
    lazyconn operations); moments are accumulated in float64 even for float32 data, so on
    float32 data the result is closer to the exact value than scipy's (differences of the
    order of float32 rounding). scipy broadcasts samples of different shapes; here the
    shapes must match apart from ``axis``.
    """
    _check_options(nan_policy, alternative)
    if not isinstance(equal_var, (bool, np.bool_)):
        raise ParameterTypeError(f"equal_var={equal_var!r} is not valid; expected True or False.")
    if trim != 0:
        raise ParameterError(
            f"trim={trim!r} is not supported by the lazy t-test; expected 0 (use "
            "scipy.stats.ttest_ind on data that fit in memory for a trimmed test)."
        )
    if method is not None:
        raise ParameterError(
            f"method={method!r} is not supported by the lazy t-test; expected None "
            "(resampling tests need the whole data in memory: use scipy.stats.ttest_ind)."
        )
    a, b = _as_dask("a", a), _as_dask("b", b)
    dtype = _result_dtype(a, b)
    shared = _shared_run(axis, a, b)
    a, b = _move_axis("a", a, axis), _move_axis("b", b, axis)
    if a.shape[:-1] != b.shape[:-1]:
        raise DimensionError(
            f"a (shape {a.shape} with the tested axis last) and b (shape {b.shape}) differ "
            "outside the tested axis; expected equal shapes apart from `axis`."
        )
    if a.chunks[:-1] != b.chunks[:-1]:
        # Samples from different sources: align b's blocks on a's (same run: no-op).
        b = rechunk(b, (*a.chunks[:-1], b.chunks[-1]))
    if shared is not None:
        # Volumes of one run: both samples' moments in one task per chunk of the run.
        m = _ops.time_moments(shared[0], nan_policy, shared[1])
        t, p, df = _ops.ttest_ind_selections(m, bool(equal_var), alternative)
    else:
        ma, mb = _ops.time_moments(a, nan_policy), _ops.time_moments(b, nan_policy)
        t, p, df = _ops.ttest_ind_moments(ma, mb, bool(equal_var), alternative)
    return TtestResult(*_cast((t, p, df), dtype))


def ttest_1samp(a, popmean, axis=0, nan_policy="propagate", alternative="two-sided"):
    """Lazy ``scipy.stats.ttest_1samp``: one-sample t-test along ``axis``, chunk by chunk.

    Parameters
    ----------
    a : dask.array.Array or array_like
        The sample. numpy inputs are wrapped in dask arrays.
    popmean : float or array_like
        Expected mean under the null hypothesis: a number, or an array whose size along
        ``axis`` is 1 and whose other dimensions match ``a`` (as scipy).
    axis : int or None, default 0
        Axis along which to test (None: the flattened array).
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        As :func:`ttest_ind`.
    alternative : {"two-sided", "less", "greater"}, default "two-sided"
        The alternative hypothesis.

    Returns
    -------
    TtestResult
        ``(statistic, pvalue)`` lazy dask arrays with a ``df`` attribute, in scipy's dtype.

    Notes
    -----
    As :func:`ttest_ind`: lazy, float64 accumulation.
    """
    _check_options(nan_policy, alternative)
    a = _as_dask("a", a)
    if isinstance(popmean, (int, float, np.integer, np.floating)) and not isinstance(
        popmean, bool
    ):
        # A Python number does not promote the result's dtype (as scipy).
        pm, dtype = float(popmean), _result_dtype(a)
    else:
        pm = _as_dask("popmean", popmean)
        dtype = _result_dtype(a, pm)
        if pm.ndim != a.ndim or (axis is not None and pm.shape[axis] != 1):
            raise DimensionError(
                f"popmean has shape {pm.shape}; expected a number or an array with the "
                f"dimensions of a ({a.shape}) and size 1 along axis={axis!r}."
            )
        pm = _move_axis("popmean", pm, axis)[..., 0]
    shared = _shared_run(axis, a)
    a = _move_axis("a", a, axis)
    if isinstance(pm, da.Array):
        if pm.shape != a.shape[:-1]:
            raise DimensionError(
                f"popmean has shape {pm.shape} outside the tested axis; expected {a.shape[:-1]}."
            )
        pm = rechunk(pm.astype(np.float64), a.chunks[:-1])
    if shared is not None:
        m = _ops.selection(_ops.time_moments(shared[0], nan_policy, shared[1]), 0)
    else:
        m = _ops.time_moments(a, nan_policy)
    t, p, df = _ops.ttest_1samp_moments(m, pm, alternative)
    return TtestResult(*_cast((t, p, df), dtype))


# --------------------------------------------------------------------------- image level


def _runs(imgs) -> list[LazyImage]:
    """A list of 4-D runs from a 4-D image, a list of 4-D runs, or a list of 3-D images."""
    if isinstance(imgs, (list, tuple)) and imgs:
        loaded = [load(im) for im in imgs]
        if all(im.ndim == 4 for im in loaded):
            names = [f"imgs[{i}]" for i in range(len(loaded))]
            check_same_fov(*loaded, names=names)
            return loaded
    return [load_4d(imgs)]


def _is_sequence(x) -> bool:
    return (isinstance(x, (Sequence, np.ndarray)) and not isinstance(x, (str, bytes))) or (
        hasattr(x, "to_numpy") and hasattr(x, "iloc")
    )


def _as_labels(labels, name="labels") -> np.ndarray:
    if hasattr(labels, "to_numpy"):
        labels = labels.to_numpy()
    arr = np.asarray(labels)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise DimensionError(
            f"{name} has shape {arr.shape}; expected one label per volume (a 1-D sequence)."
        )
    return arr


def _run_labels(labels, runs: list[LazyImage]) -> list[np.ndarray]:
    """Per-run label arrays; ``labels`` is one sequence for all volumes or one per run."""
    counts = [r.shape[3] for r in runs]
    if labels is None:
        raise ParameterError("labels=None; expected one condition label per volume.")
    per_run = (
        len(runs) > 1
        and isinstance(labels, (list, tuple))
        and len(labels) == len(runs)
        and all(_is_sequence(lab) for lab in labels)
    )
    if per_run:
        out = [_as_labels(lab, f"labels[{i}]") for i, lab in enumerate(labels)]
        for i, (lab, n) in enumerate(zip(out, counts, strict=True)):
            if len(lab) != n:
                raise ParameterError(
                    f"labels[{i}] has {len(lab)} entries but run imgs[{i}] has {n} volumes; "
                    "expected one label per volume."
                )
        return out
    flat = _as_labels(labels)
    total = sum(counts)
    if len(flat) != total:
        where = f"the {len(runs)} runs have" if len(runs) > 1 else "imgs has"
        raise ParameterError(
            f"labels has {len(flat)} entries but {where} {total} volumes; expected one "
            "label per volume."
        )
    return np.split(flat, np.cumsum(counts)[:-1])


def _condition_data(runs, run_labels, condition, name) -> da.Array:
    """The volumes labelled ``condition``, across runs (lazy; a time block per run).

    From one run, a :class:`RunArray` selection: the t-tests then reduce every condition of
    the run in one task per chunk.
    """
    selected = [lab == condition for lab in run_labels]
    n = int(sum(s.sum() for s in selected))
    if n < 2:
        present = sorted({str(v) for lab in run_labels for v in np.unique(lab)})
        raise ParameterError(
            f"{name}={condition!r} labels {n} volume(s); expected at least 2 for a t-test. "
            f"Labels present: {present}."
        )
    parts = [RunArray.of(r.data)[..., s] for r, s in zip(runs, selected, strict=True) if s.any()]
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=-1)


def _maps(ref: LazyImage, result: TtestResult) -> TtestResult:
    return TtestResult(*(new_img_like(ref, part, ref.affine) for part in (*result, result.df)))


def ttest_ind_img(
    imgs,
    labels,
    condition1,
    condition2,
    *,
    equal_var=True,
    alternative="two-sided",
    nan_policy="propagate",
):
    """Voxelwise two-sample t-test between the volumes of two conditions (lazy maps).

    The image-level form of the nilearn ROI example's ``scipy.stats.ttest_ind(
    fmri_data[..., labels == condition1], fmri_data[..., labels == condition2], axis=-1)``,
    as a chunk-by-chunk reduction over time (see :func:`ttest_ind`).

    Parameters
    ----------
    imgs : 4-D image, or list of 4-D images
        One run, or several runs on the same grid (a LazyImage, nibabel image, path or
        store; a list of 3-D images is one run).
    labels : sequence, or list of sequences
        One condition label per volume (e.g. a pandas Series of a ``labels.txt`` column):
        one sequence over all runs' volumes in order, or one sequence per run.
    condition1, condition2 : label
        The two conditions to compare (``t > 0`` where ``condition1`` has the higher mean).
        Each must label at least two volumes.
    equal_var : bool, default True
        Student's (True) or Welch's (False) test.
    alternative : {"two-sided", "less", "greater"}, default "two-sided"
        The alternative hypothesis.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        Handling of NaN voxel values, as scipy.

    Returns
    -------
    TtestResult
        ``(t_img, p_img)`` LazyImages on the run's grid (unpacks as a pair), with ``df``
        (an image) as an attribute.
    """
    runs = _runs(imgs)
    run_labels = _run_labels(labels, runs)
    a = _condition_data(runs, run_labels, condition1, "condition1")
    b = _condition_data(runs, run_labels, condition2, "condition2")
    result = ttest_ind(
        a, b, axis=-1, equal_var=equal_var, nan_policy=nan_policy, alternative=alternative
    )
    return _maps(runs[0], result)


def ttest_1samp_img(
    imgs,
    popmean=0.0,
    labels=None,
    condition=None,
    *,
    alternative="two-sided",
    nan_policy="propagate",
):
    """Voxelwise one-sample t-test over the volumes of a run (or of one condition).

    Parameters
    ----------
    imgs : 4-D image, or list of 4-D images
        One run, or several runs on the same grid.
    popmean : float or 3-D image, default 0.0
        Mean under the null hypothesis: a number, or a map on the run's grid.
    labels : sequence, or list of sequences, optional
        One condition label per volume (see :func:`ttest_ind_img`); with ``condition``,
        only the volumes so labelled are tested. Without, every volume is.
    condition : label, optional
        The condition whose volumes are tested (requires ``labels``).
    alternative : {"two-sided", "less", "greater"}, default "two-sided"
        The alternative hypothesis.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        Handling of NaN voxel values, as scipy.

    Returns
    -------
    TtestResult
        ``(t_img, p_img)`` LazyImages with ``df`` as an attribute.
    """
    runs = _runs(imgs)
    if condition is None:
        if labels is not None:
            raise ParameterError(
                "labels were given without condition; expected condition=<label> to select "
                "the volumes to test (or neither, to test every volume)."
            )
        parts = [r.data for r in runs]
        data = parts[0] if len(parts) == 1 else da.concatenate(parts, axis=-1)
        if data.shape[-1] < 2:
            raise ParameterError(
                f"imgs has {data.shape[-1]} volume(s); expected at least 2 for a t-test."
            )
    else:
        data = _condition_data(runs, _run_labels(labels, runs), condition, "condition")
    if isinstance(popmean, (int, float, np.integer, np.floating)) and not isinstance(
        popmean, bool
    ):
        pm = popmean
    else:
        pm_img = load(popmean)
        if pm_img.ndim != 3:
            raise DimensionError(
                f"popmean has shape {pm_img.shape}; expected a number or a 3-D image."
            )
        check_same_fov(runs[0], pm_img, names=["imgs", "popmean"])
        pm = pm_img.data[..., None]
    result = ttest_1samp(data, pm, axis=-1, nan_policy=nan_policy, alternative=alternative)
    return _maps(runs[0], result)


# --------------------------------------------------------------------------- computing


def compute_maps(*maps, run=None, batch_bytes=None):
    """Compute lazy 3-D maps of one run together, in batches that bound memory.

    A map computed from a smoothed run (``map_overlap`` halos) as one graph lets dask keep
    many blocks of the run alive. With ``run``, the maps are computed in batches of spatial
    block-rows of the run (one ``dask.compute`` of every map per batch, the batches of
    ``LazyImage.to_zarr``), each reading at most about ``batch_bytes`` of the run plus the
    neighbours' halos; all maps of a batch share its read.

    Parameters
    ----------
    *maps : dask arrays or LazyImages
        3-D lazy maps on the run's grid, e.g. a t-test's ``pvalue`` and ``mean_img``.
    run : 4-D LazyImage or dask array, optional
        The run the maps are computed from (its chunks define the batches). Without it,
        the maps are computed in one ``dask.compute``.
    batch_bytes : int, optional
        Bytes of the run read per batch (default
        ``lazyconn.io.writers.DEFAULT_BATCH_BYTES``, 128 MiB).

    Returns
    -------
    list of numpy arrays
        The computed maps, in the order given.
    """
    arrays = [m.data if isinstance(m, LazyImage) else m for m in maps]
    for i, a in enumerate(arrays):
        if not isinstance(a, da.Array) or a.ndim != 3:
            raise ParameterTypeError(
                f"maps[{i}] is {type(a).__name__} of {getattr(a, 'ndim', '?')} dimensions; "
                "expected 3-D dask arrays or LazyImages."
            )
    if run is None:
        return [np.asarray(x) for x in da.compute(*arrays)]
    data = run.data if isinstance(run, LazyImage) else run
    if not isinstance(data, da.Array) or data.ndim != 4:
        raise ParameterTypeError(
            f"run is {type(run).__name__}; expected a 4-D LazyImage or dask array."
        )
    for i, a in enumerate(arrays):
        if a.shape != data.shape[:3]:
            raise DimensionError(
                f"maps[{i}] has shape {a.shape}; expected the run's grid {data.shape[:3]}."
            )
    # batch_regions works on (t, z, y, x) arrays: its last two slices are y and x.
    regions = batch_regions(tuple(reversed(data.chunks)), data.dtype.itemsize, batch_bytes)
    out = [np.empty(a.shape, dtype=a.dtype) for a in arrays]
    for region in regions:
        xy = (region[-1], region[-2])
        for o, part in zip(out, da.compute(*(a[xy] for a in arrays)), strict=True):
            o[xy] = part
    return out
