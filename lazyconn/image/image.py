"""Image functions with nilearn's names, arguments and defaults, returning lazy LazyImages.

Inputs are anything :func:`lazyconn.load` accepts (LazyImage, nibabel image, path); where
nilearn accepts a 4-D image, a list of 3-D images is stacked along time. Results are
LazyImages over dask graphs; nothing here reads a 4-D run.

Differences from nilearn (all caused by laziness) are listed in each docstring; the common
ones: the header of a result carries the result's dtype (nilearn copies the reference's
data dtype, which quantises on save), ``cal_min``/``cal_max`` are not filled (that would
need a compute), and value-dependent warnings (e.g. "threshold exceeds the maximum") are
emitted for 3-D maps only (for runs they would need a read of the run).
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
from scipy import ndimage

from lazyconn._docs import fill_doc
from lazyconn._utils import rechunk, warn
from lazyconn.config import DEFAULT_CHUNK_BYTES, float_dtype_for, mean_dtype
from lazyconn.exceptions import (
    DimensionError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._load import load
from lazyconn.image._niimg import (
    _default_chunks_for,
    _is_list_of_images,
    check_same_fov,
    finite_data,
    get_data,
    load_3d,
    load_4d,
    load_img,
    load_mask_img,
    new_img_like,
)
from lazyconn.image._runarray import Volumewise
from lazyconn.image.resampling import on_grid_of, resample_img
from lazyconn.ops import spatial

__all__ = [
    "binarize_img",
    "check_same_fov",
    "get_data",
    "index_img",
    "math_img",
    "mean_img",
    "new_img_like",
    "smooth_img",
    "threshold_img",
]


# ---------------------------------------------------------------------------------------
# smoothing
# ---------------------------------------------------------------------------------------
def smooth_array(arr, affine, fwhm=None, ensure_finite=True, copy=True):
    """Lazy nilearn ``smooth_array`` on a dask (or numpy) 3-D/4-D array.

    Integers are promoted (int64/uint64 -> float64, others -> float32); floats keep their
    dtype. ``copy`` is accepted for signature parity (dask arrays are never modified).
    """
    del copy
    if isinstance(arr, np.ndarray):
        arr = da.from_array(arr, chunks=_default_chunks_for(arr))
    arr, step = _smoothing(arr, affine, fwhm, ensure_finite)
    return arr if step is None else step(arr)


def _smoothing(arr, affine, fwhm, ensure_finite):
    """``(prepared, step)``: the smoothed array is ``step(prepared)`` (step None: no smoothing).

    ``prepared`` is the input as floats (non-finite values zeroed with ``ensure_finite``);
    ``step`` filters each volume alone, linearly (a :class:`Volumewise` step).
    """
    if isinstance(fwhm, (int, float)) and not isinstance(fwhm, bool) and fwhm == 0:
        warn(
            f"The parameter 'fwhm' for smoothing is specified as {fwhm}. "
            "Setting it to None (no smoothing will be performed)",
            LazyconnWarning,
        )
        fwhm = None
    if isinstance(fwhm, str) and fwhm != "fast":
        raise ParameterError(
            f"fwhm={fwhm!r} is not valid; expected a number (mm), a sequence of 3 numbers, "
            "None, or 'fast'."
        )
    if isinstance(fwhm, bool):
        raise ParameterError(
            f"fwhm={fwhm!r} is not valid; expected a number (mm), None, or 'fast'."
        )
    sigmas = None
    if fwhm is not None and not isinstance(fwhm, str):
        sigmas = spatial.fwhm_to_sigma(fwhm, affine)  # validates before any graph is built
    if arr.dtype.kind in "iub":
        arr = arr.astype(float_dtype_for(arr.dtype))
    if ensure_finite:
        arr = spatial.ensure_finite(arr)
    if isinstance(fwhm, str):  # "fast" (other strings were refused above)
        return arr, spatial.fast_smooth
    if sigmas is None or not any(spatial.gaussian_halfwidth(float(x)) for x in sigmas):
        return arr, None
    return arr, functools.partial(spatial.gaussian_smooth, sigmas=tuple(float(x) for x in sigmas))


@fill_doc
def smooth_img(imgs, fwhm):
    """Smooth images with a Gaussian filter along the three spatial axes (lazy).

    Same results as ``nilearn.image.smooth_img`` within float32 rounding (a few ulps:
    lazyconn's passes are BLAS products, 2-5x less CPU than scipy's filters; see
    :func:`lazyconn.ops.spatial.gaussian_block`). NaN/inf become 0 first.

    Parameters
    ----------
    %(imgs)s
        A list gives a list of results, as in nilearn.
    fwhm : float, 3 floats, "fast" or None
        Full width at half maximum (mm), one value or one per axis (``None`` entries: no
        smoothing on that axis); ``"fast"`` is nilearn's face-neighbour average; ``None`` or 0
        (with nilearn's warning) does not smooth. Negative or non-finite values raise
        ParameterError (nilearn silently skips negative ones).

    Returns
    -------
    LazyImage or list of LazyImage
        Nothing is computed; the chunks of the input are kept (with a halo of the kernel's
        half-width between chunks). A smoothed run remembers its unsmoothed volumes:
        smoothing filters each volume alone and linearly, so ``index_img``, ``mean_img``
        and the t-tests of ``lazyconn.stats`` on volumes of ``get_data(run,
        compute=False)`` select or average the volumes first and smooth only what they
        use (equal to smoothing first, within float32 rounding). nilearn smooths the whole
        run first.
    """
    single = not _is_list_of_images(imgs)
    out = []
    for img in [imgs] if single else imgs:
        img = load(img)
        prepared, step = _smoothing(img.data, img.affine, fwhm, ensure_finite=True)
        smoothed = img.with_data(prepared if step is None else step(prepared))
        if step is not None and prepared.ndim == 4:
            smoothed._volumewise = Volumewise(prepared, step)
        out.append(smoothed)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------
# mean, index, math
# ---------------------------------------------------------------------------------------
def compute_mean(imgs, target_affine=None, target_shape=None, smooth=False):
    """Lazy nilearn ``compute_mean``: (mean over time, affine), optionally resampled/smoothed.

    The mean is accumulated in float64 and cast to numpy's result dtype (float32 stays
    float32), so it can differ from numpy's float32 summation in the last bits. A run
    opened from a store that holds its temporal mean (``convert`` stores it) reads that
    instead of the run: the same values, bit for bit.
    """

    img = load_img(imgs, "imgs")
    data = img.data
    if img.ndim == 4:
        stored = img._raw[3] if img._raw is not None else None
        if img._volumewise is not None:
            # e.g. a smoothed run: smooth the mean of the unsmoothed volumes (linear step)
            data = img._volumewise.mean(mean_dtype(data.dtype))
        elif stored is not None:
            data = stored
        else:
            data = data.mean(axis=-1, dtype=np.float64).astype(mean_dtype(data.dtype))
    affine = img.affine
    if target_affine is not None or target_shape is not None:
        mean = resample_img(
            LazyImage(data, img.affine, img.header),
            target_affine=target_affine,
            target_shape=target_shape,
            copy=False,
        )
        data, affine = mean.data, mean.affine
    if smooth:
        if data.nbytes <= DEFAULT_CHUNK_BYTES:
            # One block (a 3-D mean is small): no halo graph, whose ~25 tasks per run were
            # most of a seed mask stage (20 runs: 0.19 -> 0.11 s).
            data = rechunk(data, -1)
        smoothed = smooth_array(data, np.eye(4), fwhm=smooth, ensure_finite=True)
        # NaN back where the mean had one: one task per block (a mask stage builds and
        # runs this graph for every run, and dask's per-operation cost dominated there)
        data = da.map_blocks(_nan_where_nan, data, smoothed, dtype=smoothed.dtype)
    return data, affine


def _nan_where_nan(mean: np.ndarray, smoothed: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(mean), np.nan, smoothed).astype(smoothed.dtype, copy=False)


@fill_doc
def mean_img(imgs, target_affine=None, target_shape=None, verbose=0, n_jobs=1, copy_header=True):
    """Mean over time of a 4-D image, or unweighted mean of per-image means for a list.

    As ``nilearn.image.mean_img``: every mean is resampled (continuous) to the target grid,
    the first image's grid when no complete target is given.

    Parameters
    ----------
    %(imgs)s
    %(target_affine)s
    %(target_shape)s
    %(verbose_ignored)s
    %(n_jobs_ignored)s
    %(copy_header)s

    Returns
    -------
    LazyImage
        3-D, lazy: the mean is a reduction over time chunks, accumulated in float64. A run
        opened unchanged from a store that holds its temporal mean (stores made by
        ``convert``) reads the stored mean (one value per voxel, equal bit for bit) instead
        of the whole run.
    """
    del verbose, n_jobs
    if not _is_list_of_images(imgs):
        imgs = [imgs]
    if len(imgs) == 0:
        raise ParameterError("imgs=[] is empty; expected at least one image.")
    first = load(imgs[0])
    running, first_affine = compute_mean(first, target_affine, target_shape)
    if target_affine is None or target_shape is None:
        target_affine, target_shape = first_affine, running.shape[:3]
    for img in imgs[1:]:
        this, _ = compute_mean(img, target_affine, target_shape)
        running = running + this.astype(running.dtype)
    running = running / float(len(imgs))
    return new_img_like(first, running, target_affine, copy_header=copy_header)


@fill_doc
def index_img(imgs, index):
    """Select volumes of a 4-D image along time (int -> 3-D image), as nilearn.

    Parameters
    ----------
    %(imgs)s
    index : int, slice, or array of ints or bools
        Volumes to keep. pandas objects are turned into numpy; an int out of range raises
        IndexError.

    Returns
    -------
    LazyImage
        3-D for an int index, else 4-D; lazy.
    """
    img = load_4d(imgs)
    if hasattr(index, "values") and hasattr(index, "iloc"):
        index = index.to_numpy().ravel()
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        n = img.shape[3]
        if index < -n or index >= n:
            raise IndexError(
                f"Integer index {index} out of range for last dimension with size {n}"
            )
    if isinstance(index, (list, tuple)):
        index = np.asarray(index)
    volumewise = img._volumewise
    if volumewise is not None:
        # e.g. a smoothed run: smooth only the selected volumes
        volumewise = volumewise.select(index)
        data = volumewise.step(volumewise.source)
    else:
        data = img.data[..., index]
    if data.ndim == 4 and len(data.chunks[3]) > 1:
        data = rechunk(data, {3: -1})
    out = new_img_like(img, data, img.affine)
    if data.ndim == 4 and volumewise is not None:
        out._volumewise = volumewise
    return out


def math_img(formula: str, copy_header_from=None, **imgs):
    """Evaluate a numpy formula on images given as keyword arguments (lazy).

    The names in ``formula`` are bound to the images' dask arrays and ``np`` to numpy;
    numpy functions dispatch to dask, so the result stays lazy. All images must share one
    grid (GridMismatchError otherwise). Images not in the formula -> warning, as nilearn.

    Parameters
    ----------
    formula : str
        A numpy expression of the image names, e.g. ``"np.mean(img, axis=-1) > 100"``.
    copy_header_from : str, optional
        Name of the image whose header is copied to the result (as nilearn).
    **imgs
        The images, by the names the formula uses.

    Returns
    -------
    LazyImage
        On the images' grid; nothing is computed.
    """
    if not isinstance(formula, str):
        raise ParameterTypeError(
            f"formula={formula!r} has type {type(formula).__name__}; expected a str."
        )
    missing = [k for k in imgs if k not in formula and k != copy_header_from]
    if missing:
        warn(
            f"Some images ({missing}) are not mentioned in the formula={formula!r}.",
            LazyconnWarning,
        )
    if not imgs:
        raise ParameterError("math_img got no images; pass them as keyword arguments.")
    loaded = {k: load_img(v, k) for k, v in imgs.items()}
    check_same_fov(*loaded.values(), names=list(loaded))
    if copy_header_from is not None and copy_header_from not in loaded:
        raise ParameterError(
            f"copy_header_from={copy_header_from!r} is not one of the images {list(loaded)}."
        )
    scope = {k: v.data for k, v in loaded.items()}
    scope["np"] = np
    try:
        result = eval(formula, scope)
    except Exception as exc:
        exc.args = (f"Input formula couldn't be processed, you provided '{formula}',", *exc.args)
        raise
    if not isinstance(result, (np.ndarray, da.Array)):
        result = np.asarray(result)
    if result.ndim not in (3, 4):
        raise DimensionError(
            f"formula={formula!r} gives an array of shape {result.shape}; expected a 3-D or "
            "4-D image."
        )
    last = list(loaded.values())[-1]
    if copy_header_from is None:
        return new_img_like(last, result, last.affine, copy_header=False)
    src = loaded[copy_header_from]
    if result.ndim != src.ndim:
        raise DimensionError(
            "Cannot copy the header. The result of the formula has a different number of "
            f"dimensions ({result.ndim}) than {copy_header_from!r} ({src.ndim})."
        )
    return new_img_like(src, result, src.affine)


# ---------------------------------------------------------------------------------------
# thresholding
# ---------------------------------------------------------------------------------------
def _parse_threshold(threshold, two_sided: bool, name: str = "threshold"):
    """(value, is_percentile) with nilearn's ``check_threshold`` validation."""
    if isinstance(threshold, str):
        msg = (
            f'If "{name}" is given as string it should be a number followed by the percent '
            f'sign, e.g. "25.3%"; got {name}={threshold!r}.'
        )
        if not threshold.endswith("%"):
            raise ParameterError(msg)
        try:
            value = float(threshold[:-1])
        except ValueError:
            raise ParameterError(msg) from None
        if value < 0:
            raise ParameterError(
                f"{name}={threshold!r}: should not be a negative percentile value."
            )
        if value > 100:
            raise ParameterError(f"{name}={threshold!r}: a percentile must be within 0% and 100%.")
        return value, True
    ok = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(
        threshold, bool
    )
    if not ok:
        raise ParameterTypeError(
            f"{name}={threshold!r} should be either a number or a string finishing with a "
            "percent sign."
        )
    value = float(threshold)
    if value < 0 and two_sided:
        raise ParameterError(
            f'"{name}"={threshold!r} should not be a negative value when two_sided=True.'
        )
    return value, False


def _percentile_cutoff(block: np.ndarray, mask, q: float, two_sided: bool) -> np.ndarray:
    values = block.ravel() if mask is None else block[mask]
    values = np.abs(values) if two_sided else values[values >= 0]
    # == scipy.stats.scoreatpercentile (linear interpolation), without importing scipy.stats
    return np.asarray(np.percentile(values, q) + 1e-5)


def _cluster_threshold_volume(vol: np.ndarray, cluster_threshold) -> np.ndarray:
    """nilearn's ``_apply_cluster_size_threshold``: drop 6-connected clusters per sign."""
    vol = vol.copy()
    structure = ndimage.generate_binary_structure(3, 1)
    for sign in np.unique(np.sign(vol)):
        labels, _ = ndimage.label((vol * sign) > 0, structure)
        sizes = np.bincount(labels.ravel())
        small = sizes < cluster_threshold
        small[0] = False
        vol[small[labels]] = 0
    return vol


def _cluster_threshold_block(block, cluster_threshold):
    if block.ndim == 3:
        return _cluster_threshold_volume(block, cluster_threshold)
    out = np.empty_like(block)
    for t in range(block.shape[3]):
        out[..., t] = _cluster_threshold_volume(block[..., t], cluster_threshold)
    return out


def _warn_if_out_of_range(data, mask, value: float, two_sided: bool) -> None:
    """nilearn's warnings of a 3-D map's values (the check is cheap): non-finite values, and
    a threshold leaving no voxel: above the maximum, or (negative, one-sided) below the
    minimum (``check_threshold``)."""
    values = finite_data(np.asarray(data.compute()))
    values = values if mask is None else values[mask]
    if value >= 0:
        values = np.abs(values) if two_sided else values[values >= 0]
        if values.size and value > values.max():
            warn(
                f"The given float value must not exceed {values.max()}. But, you have given "
                f"threshold={value}: no voxel is kept (the result is empty).",
                LazyconnWarning,
            )
        return
    values = values[values <= 0]
    if values.size and value < values.min():
        warn(
            f"The given float value must not be less than {values.min()}. But, you have "
            f"given threshold={value}: no voxel is kept (the result is empty).",
            LazyconnWarning,
        )


@fill_doc
def threshold_img(
    img,
    threshold,
    cluster_threshold=0,
    two_sided=True,
    mask_img=None,
    copy=True,
    copy_header=True,
):
    """Set to 0 voxels below a threshold (and clusters smaller than ``cluster_threshold``).

    As ``nilearn.image.threshold_img`` (0.14.1 semantics): NaN -> 0; ``mask_img`` zeroes
    outside voxels and restricts the percentile statistics to in-mask entries (resampled
    with nearest interpolation when its grid differs); ``"q%"`` thresholds use
    ``scoreatpercentile`` (+1e-5) of |data| (two-sided) or of the non-negative entries.
    The percentile is an exact lazy reduction (one task over all entries: meant for
    statistical maps, not long runs). Cluster thresholding labels each volume whole.
    A threshold above the data's maximum (or, negative and one-sided, below its minimum)
    and non-finite values warn as in nilearn for 3-D maps with a numeric threshold (one
    cheap compute); for 4-D runs and percentiles the checks are skipped (they would read
    the data before it is asked for).

    Parameters
    ----------
    %(img)s
    %(threshold_img)s
    cluster_threshold : int, default=0
        Clusters (6-connected, per sign and volume) with fewer voxels become 0; 0 keeps all.
    %(two_sided)s
    %(mask_img_image)s
    copy : bool, default=True
        Accepted for nilearn parity, no effect: inputs are never modified.
    %(copy_header)s

    Returns
    -------
    LazyImage
        Same grid and dtype as ``img``; lazy.
    """
    del copy
    value, is_pct = _parse_threshold(threshold, two_sided)
    ok = isinstance(cluster_threshold, (int, float, np.integer, np.floating)) and not isinstance(
        cluster_threshold, bool
    )
    if not ok or cluster_threshold < 0:
        raise ParameterError(
            f"cluster_threshold={cluster_threshold!r} is not valid; expected a number >= 0."
        )
    img = load_img(img)
    data = spatial.ensure_finite(img.data)
    mask = None
    if mask_img is not None:
        mask_img = load_3d(mask_img, "mask_img")
        mask_img = on_grid_of(mask_img, img)
        mask, _ = load_mask_img(mask_img)
        data = da.where(mask if data.ndim == 3 else mask[..., None], data, data.dtype.type(0))
    if data.ndim == 3 and not is_pct:
        _warn_if_out_of_range(img.data, mask, value, two_sided)
    if is_pct:
        # Exact order statistics need every entry in one task.
        whole = rechunk(data, -1)
        cutoff = whole.map_blocks(
            _percentile_cutoff,
            mask,
            value,
            two_sided,
            chunks=(),
            drop_axis=list(range(whole.ndim)),
            dtype=np.float64,
            meta=np.empty((), dtype=np.float64),
        )
    else:
        cutoff = value
    if two_sided:
        zero = (data > -cutoff) & (data < cutoff)
    elif is_pct or value >= 0:
        zero = data < cutoff
    else:
        zero = data > cutoff
    data = da.where(zero, data.dtype.type(0), data)
    if cluster_threshold > 0:
        full = rechunk(data, {0: -1, 1: -1, 2: -1})
        blocks = full.map_blocks(_cluster_threshold_block, cluster_threshold, dtype=data.dtype)
        data = rechunk(blocks, img.data.chunks)
    return new_img_like(img, data, img.affine, copy_header=copy_header)


@fill_doc
def binarize_img(img, threshold=0.0, mask_img=None, two_sided=False, copy_header=True):
    """int8 image: 1 where ``threshold_img(img, threshold, ...)`` is non-zero, else 0.

    Parameters
    ----------
    %(img)s
    threshold : float, or str ending with "%", default=0.0
        As :func:`threshold_img`.
    %(mask_img_image)s
    two_sided : bool, default=False
        Threshold the absolute values (nilearn's default here is ``False``).
    %(copy_header)s

    Returns
    -------
    LazyImage
        int8, lazy.
    """
    thr = threshold_img(
        img, threshold, mask_img=mask_img, two_sided=two_sided, copy_header=copy_header
    )
    return new_img_like(thr, (thr.data != 0).astype(np.int8), thr.affine, copy_header=copy_header)
