"""``clean_img`` and image-level ``high_variance_confounds``: image -> (T, V) -> signal -> image.

Both keep nilearn's place in ``lazyconn.image`` but run ``lazyconn.signal`` (imported inside
the functions: signal sits in a lower layer, see the import-linter exception).

Cleaning is independent per voxel, so the voxels are taken **in storage-block order** rather
than C order (:func:`lazyconn.ops.voxels.gather` with ``order="block"``): every spatial block
becomes one (T, v) chunk, is cleaned, and is written back into the same block. The whole
chain is one pass over the run with no gather across blocks, and the output keeps the
input's spatial chunks. The only cross-voxel steps (the ``psc`` decision, the
high-variance percentile and Gram matrix) are sums over voxels, which do not depend on
their order (up to floating-point rounding).
"""

from __future__ import annotations

import numpy as np

from lazyconn._docs import fill_doc
from lazyconn._utils import rechunk
from lazyconn.exceptions import GridMismatchError, ParameterError
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._niimg import load_4d, load_mask_img, new_img_like
from lazyconn.ops import spatial
from lazyconn.ops.voxels import block_positions, gather, scatter

__all__ = ["clean_img", "high_variance_confounds"]


def _signals(img: LazyImage, mask_img):
    """(T, V) dask signals in block order and the positions map to scatter them back.

    With a mask: nilearn's ``apply_mask`` semantics (NaN/inf -> 0, ints -> float32).
    Without: every voxel of the box, values untouched (as nilearn's reshape).
    """
    data = img.data
    if len(data.chunks[3]) > 1:
        data = rechunk(data, {3: -1})
    if mask_img is None:
        mask = np.ones(img.shape[:3], dtype=bool)
    else:
        mask, affine = load_mask_img(mask_img)
        if mask.shape != tuple(img.shape[:3]) or not np.allclose(affine, img.affine):
            raise GridMismatchError(
                f"mask_img (shape {mask.shape}, affine {np.round(affine, 4).tolist()}) and imgs "
                f"(shape {tuple(img.shape[:3])}, affine {np.round(img.affine, 4).tolist()}) are "
                "not on the same voxel grid; expected equal shapes and affines. Resample the "
                "mask with lazyconn.image.resample_to_img(mask_img, imgs, "
                "interpolation='nearest')."
            )
        if data.dtype.kind != "f":
            data = data.astype(np.float32)
        data = spatial.ensure_finite(data)
    chunks3 = data.chunks[:3]
    return gather(data, mask, order="block"), block_positions(mask, chunks3), chunks3


@fill_doc
def clean_img(
    imgs,
    runs=None,
    detrend=True,
    standardize=True,
    confounds=None,
    low_pass=None,
    high_pass=None,
    t_r=None,
    ensure_finite=False,
    mask_img=None,
    **kwargs,
) -> LazyImage:
    """Clean a 4-D image voxel by voxel with ``signal.clean`` (lazy ``nilearn.image.clean_img``).

    Same parameters and defaults as nilearn 0.14.1. With ``mask_img``, voxels outside the
    mask are 0 and NaN/inf inside become 0 first (as nilearn's ``apply_mask``); without,
    every voxel is cleaned. Results equal nilearn's up to floating-point rounding
    (``signal.clean`` computes in float64 inside each chunk and casts to float32 for
    float32 input).

    Parameters
    ----------
    imgs : 4-D image, or path
        The run to clean, opened lazily.
    %(runs)s
    detrend : bool, default=True
        Remove a linear trend from every voxel.
    standardize : {"zscore_sample", "psc", True, False, None}, default=True
        As :func:`lazyconn.signal.clean`; ``True`` means ``"zscore_sample"`` with nilearn's
        FutureWarning.
    confounds : array, DataFrame, path, or a list of them, optional
        Confounds regressed out of every voxel (nilearn's ``signal.clean`` inputs).
    %(low_pass)s
    %(high_pass)s
    t_r : float, optional
        Repetition time (s); required with a filter and not read from the header (nilearn).
    ensure_finite : bool, default=False
        Replace NaN and inf by 0 before cleaning.
    mask_img : 3-D image, or path, optional
        Clean only the voxels inside it (the others become 0).
    **kwargs
        ``clean__``-prefixed keywords go to :func:`lazyconn.signal.clean` (e.g.
        ``clean__filter="cosine"``); any other keyword is a ParameterError.

    Returns
    -------
    LazyImage
        With the input's spatial chunks (and header); nothing is computed.
    """
    from lazyconn import signal

    if (low_pass is not None or high_pass is not None) and t_r is None:
        raise ParameterError(
            "Repetition time (t_r) must be specified for filtering: low_pass="
            f"{low_pass!r}, high_pass={high_pass!r} but t_r=None. (lazyconn, like nilearn, "
            "does not take it from the header.)"
        )
    unknown = [k for k in kwargs if not k.startswith("clean__")]
    if unknown:
        raise ParameterError(
            f"clean_img got unexpected keyword arguments {unknown}; expected keywords prefixed "
            "with 'clean__' (passed to signal.clean)."
        )
    clean_kwargs = {k[len("clean__") :]: v for k, v in kwargs.items()}
    img = load_4d(imgs, "imgs")
    signals, positions, chunks3 = _signals(img, mask_img)
    cleaned = signal.clean(
        signals,
        runs=runs,
        detrend=detrend,
        standardize=standardize,
        confounds=confounds,
        low_pass=low_pass,
        high_pass=high_pass,
        t_r=t_r,
        ensure_finite=ensure_finite,
        **clean_kwargs,
    )
    data = scatter(cleaned, positions, chunks3)
    if mask_img is not None:
        return LazyImage(data, img.affine)
    return new_img_like(img, data, img.affine)


def high_variance_confounds(
    imgs, n_confounds=5, percentile=2.0, detrend=True, mask_img=None, compute=True
):
    """CompCor-like confounds of a 4-D image, as ``nilearn.image.high_variance_confounds``.

    Returns (T, n_confounds) numpy, as nilearn (float64 computed, in nilearn's dtype: the
    run's float dtype); with ``compute=False`` (lazyconn addition) the lazy dask array, whose
    percentile and Gram matrix are reductions over voxel chunks.

    Parameters
    ----------
    imgs : 4-D image, or path
        The run, opened lazily.
    n_confounds : int, default=5
        Number of confounds (the top temporal singular vectors).
    percentile : float, default=2.0
        Percentage of the voxels with the highest variance (after detrending) used.
    detrend : bool, default=True
        Remove a linear trend before measuring the variance.
    mask_img : 3-D image, or path, optional
        Use only its voxels (NaN -> 0); without, every voxel of the box.
    compute : bool, default=True
        lazyconn addition: False returns the lazy dask array (nothing is read).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        (n_volumes, n_confounds).
    """
    from lazyconn import signal

    img = load_4d(imgs, "imgs")
    signals, _, _ = _signals(img, mask_img)
    out = signal.high_variance_confounds(
        signals, n_confounds=n_confounds, percentile=percentile, detrend=detrend
    )
    return np.asarray(out.compute()) if compute else out
