"""Lazy ``resample_img`` / ``resample_to_img`` with nilearn 0.14.1's arguments and defaults.

Interpolation is ``scipy.ndimage.affine_transform`` on whole 3-D volumes, exactly as nilearn
calls it, so results are identical: the cubic-spline prefilter (``"continuous"``) runs along
whole axes and cannot be split spatially. 4-D images are therefore rechunked to groups of
whole volumes (a few tens of MB per chunk), resampled volume by volume, and rechunked back
to lazyconn's spatial-block layout.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import linalg, ndimage

from lazyconn._docs import fill_doc
from lazyconn._utils import check_in, rechunk, warn
from lazyconn.config import DEFAULT_CHUNK_BYTES, default_chunks
from lazyconn.exceptions import (
    BoundingBoxError,
    DimensionError,
    LazyconnWarning,
    ParameterError,
)
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._niimg import load_img, new_img_like
from lazyconn.ops.spatial import extrapolate_out_mask

__all__ = ["get_bounds", "resample_img", "resample_to_img"]

_ORDERS = {"continuous": 3, "linear": 1, "nearest": 0}


def get_bounds(shape, affine):
    """World-space (min, max) per axis of the centres of the corner voxels (nilearn)."""
    a, b, c = (s - 1 for s in shape[:3])
    box = np.array(
        [
            [0.0, 0, 0, 1],
            [a, 0, 0, 1],
            [0, b, 0, 1],
            [0, 0, c, 1],
            [a, b, 0, 1],
            [a, 0, c, 1],
            [0, b, c, 1],
            [a, b, c, 1],
        ]
    ).T
    box = np.dot(affine, box)[:3]
    return list(zip(box.min(axis=-1), box.max(axis=-1), strict=False))


def _check_inputs(target_shape, target_affine, interpolation):
    if target_shape is not None:
        if len(target_shape) != 3:
            raise ParameterError(
                f"target_shape={target_shape!r} is not valid; expected the shape of the 3-D "
                "grid (3 integers)."
            )
        if target_affine is None:
            raise ParameterError(
                f"target_shape={target_shape!r} was given without target_affine; "
                "give both (a 4x4 target_affine)."
            )
        if np.shape(target_affine) == (3, 3):
            raise ParameterError(
                "Given target shape without anchor vector: 'target_affine' shape should be "
                "(4, 4) and not (3, 3)."
            )
    if target_affine is not None and np.shape(target_affine) not in ((3, 3), (4, 4)):
        raise DimensionError(
            f"target_affine has shape {np.shape(target_affine)}; expected (3, 3) or (4, 4)."
        )
    check_in("interpolation", interpolation, tuple(_ORDERS))


def _resampled_dtype(dtype, interpolation):
    """nilearn's ``_get_resampled_data_dtype``: signed ints -> floats for continuous."""
    dtype = np.dtype(dtype)
    if interpolation == "continuous" and dtype.kind == "i":
        name = dtype.name.replace("int", "float")
        if name in ("float8", "float16"):
            name = "float32"
        warn(f"Casting data from {dtype.name} to {name}", LazyconnWarning)
        return np.dtype(name)
    return dtype


def _resample_volume(vol, A, b, target_shape, order, fill_value, out_dtype):
    """One 3-D volume, as nilearn's ``_resample_one_img`` (NaN/inf extrapolated, put back)."""
    out = np.zeros(target_shape, dtype=out_dtype, order="F")
    non_finite = None
    if vol.dtype.kind not in "iu":
        finite = np.isfinite(vol)
        if not finite.all():
            non_finite = ~finite
            vol = extrapolate_out_mask(vol, finite, iterations=2)[0]
    ndimage.affine_transform(
        vol, A, offset=b, output_shape=target_shape, output=out, cval=fill_value, order=order
    )
    if non_finite is not None:
        nf = ndimage.affine_transform(non_finite, A, offset=b, output_shape=target_shape, order=0)
        out[nf] = np.nan
    return out


def _resample_block(block, A, b, target_shape, order, fill_value, out_dtype):
    if block.ndim == 3:
        return _resample_volume(block, A, b, target_shape, order, fill_value, out_dtype)
    out = np.empty(tuple(target_shape) + block.shape[3:], dtype=out_dtype)
    for t in range(block.shape[3]):
        out[..., t] = _resample_volume(
            block[..., t], A, b, target_shape, order, fill_value, out_dtype
        )
    return out


def _not_needed(img, target_affine, target_shape) -> bool:
    if (
        target_affine.shape == img.affine.shape
        and np.allclose(target_affine, img.affine)
        and np.array_equal(np.asarray(target_shape), img.shape)
    ):
        return True
    if target_shape is None or target_affine.shape != (4, 4):
        return False
    return bool(
        np.all(np.array(target_shape) == img.shape[:3]) and np.allclose(target_affine, img.affine)
    )


@fill_doc
def resample_img(
    img,
    target_affine=None,
    target_shape=None,
    interpolation="continuous",
    copy=True,
    order="F",
    clip=True,
    fill_value=0.0,
    force_resample=True,
    copy_header=True,
) -> LazyImage:
    """Resample an image onto a target grid (lazy ``nilearn.image.resample_img``).

    Same semantics as nilearn 0.14.1: signed ints with "continuous" become floats (warning);
    NaN/inf are extrapolated from their neighbours and put back (nearest). No resampling
    (the image itself) when the grid is already the target. nilearn's "no sform" warning is
    emitted (a header field); the NaN "RuntimeWarning" and the "binary image" warning are not
    (they depend on voxel values, which would need a compute).

    Parameters
    ----------
    %(img)s
    target_affine : (3, 3) or (4, 4) array, optional
        A 3x3 affine gives the bounding box of the data plus one voxel; a 4x4 one without
        ``target_shape`` extends the grid to contain the data.
    %(target_shape)s
    %(interpolation)s
    %(copy)s
    %(order)s
    clip : bool, default=True
        Clip the result to ``[min(data, 0), max(data, 0)]`` (a lazy reduction over the input).
    %(resample_tail)s

    Returns
    -------
    LazyImage
        Lazy; chunked in lazyconn's spatial blocks of the target grid.
    """
    del copy
    _check_inputs(target_shape, target_affine, interpolation)
    check_in("order", order, ("F", "C"))
    check_in("force_resample", force_resample, (True, False))
    img = load_img(img)
    if target_affine is None and target_shape is None:
        return img
    if not img.get_sform(coded=True)[1]:  # a header field: no voxel is read
        warn(
            "The provided image has no sform in its header. Please check the provided file. "
            "Results may not be as expected.",
            LazyconnWarning,
        )
    target_affine = np.asarray(target_affine, dtype=np.float64)
    if _not_needed(img, target_affine, target_shape):
        return img

    if target_affine.shape == (3, 3):
        missing_offset = True
        tmp = np.eye(4)
        tmp[:3, :3] = target_affine
        target_affine = tmp
    else:
        missing_offset = False
        target_affine = target_affine.copy()
    affine = img.affine
    transform = np.linalg.inv(target_affine).dot(affine)
    (xmin, xmax), (ymin, ymax), (zmin, zmax) = get_bounds(img.shape[:3], transform)
    if missing_offset:
        target_affine[:3, 3] = target_affine[:3, :3].dot([xmin, ymin, zmin])
        xmax, ymax, zmax = xmax - xmin, ymax - ymin, zmax - zmin
    if target_shape is None:
        target_shape = (int(np.ceil(xmax)) + 1, int(np.ceil(ymax)) + 1, int(np.ceil(zmax)) + 1)
    if xmax < 0 or ymax < 0 or zmax < 0:
        raise BoundingBoxError(
            "The field of view given by target_affine does not contain any of the data "
            f"(image shape {img.shape[:3]}, affine {np.round(affine, 4).tolist()}; target "
            f"affine {np.round(target_affine, 4).tolist()})."
        )
    if np.all(target_affine == affine):
        transform = np.eye(4)
    else:
        transform = np.dot(linalg.inv(affine), target_affine)
    A, b = transform[:3, :3], transform[:3, 3]
    if np.all(np.diag(np.diag(A)) == A):
        A = np.diag(A)
    target_shape = tuple(int(s) for s in target_shape)
    out_dtype = _resampled_dtype(img.dtype, interpolation)
    spline = _ORDERS[interpolation]

    data = img.data
    kwargs = {
        "A": A,
        "b": b,
        "target_shape": target_shape,
        "order": spline,
        "fill_value": fill_value,
        "out_dtype": out_dtype,
    }
    if data.ndim == 3:
        whole = rechunk(data, -1)
        out = whole.map_blocks(
            _resample_block,
            chunks=target_shape,
            dtype=out_dtype,
            meta=np.empty((0, 0, 0), dtype=out_dtype),
            **kwargs,
        )
        out = rechunk(out, default_chunks(target_shape, out_dtype))
    else:
        # Whole volumes per chunk: the spline prefilter spans whole axes.
        vol_bytes = 8 * max(int(np.prod(img.shape[:3])), int(np.prod(target_shape)))
        n_t = max(1, min(img.shape[3], DEFAULT_CHUNK_BYTES // vol_bytes))
        volumes = rechunk(data, {0: -1, 1: -1, 2: -1, 3: n_t})
        out = volumes.map_blocks(
            _resample_block,
            chunks=(*((s,) for s in target_shape), volumes.chunks[3]),
            dtype=out_dtype,
            meta=np.empty((0, 0, 0, 0), dtype=out_dtype),
            **kwargs,
        )
        out = rechunk(out, default_chunks(target_shape + (img.shape[3],), out_dtype))
    if clip:
        vmin = da.minimum(da.nanmin(data), 0)
        vmax = da.maximum(da.nanmax(data), 0)
        out = da.maximum(da.minimum(out, vmax), vmin).astype(out_dtype)
    return new_img_like(img, out, target_affine, copy_header=copy_header)


@fill_doc
def resample_to_img(
    source_img,
    target_img,
    interpolation="continuous",
    copy=True,
    order="F",
    clip=False,
    fill_value=0.0,
    force_resample=True,
    copy_header=True,
) -> LazyImage:
    """Resample ``source_img`` onto the grid of ``target_img`` (lazy, nilearn's defaults).

    Parameters
    ----------
    source_img : image, or path
        The image to resample, opened lazily.
    target_img : image, or path
        Only its shape and affine are used (its voxels are never read).
    %(interpolation)s
    %(copy)s
    %(order)s
    clip : bool, default=False
        As :func:`resample_img` (note nilearn's default ``False`` here, ``True`` there).
    %(resample_tail)s

    Returns
    -------
    LazyImage
    """
    target = load_img(target_img, "target_img")
    return resample_img(
        source_img,
        target_affine=target.affine,
        target_shape=target.shape[:3],
        interpolation=interpolation,
        copy=copy,
        order=order,
        clip=clip,
        fill_value=fill_value,
        force_resample=force_resample,
        copy_header=copy_header,
    )


def is_on_grid(img, shape, affine) -> bool:
    """Whether ``img`` is on the (``shape``, ``affine``) grid: equal spatial shape and
    ``np.allclose`` affines, as :func:`check_same_fov`."""
    return tuple(img.shape[:3]) == tuple(shape[:3]) and np.allclose(img.affine, affine)


def to_grid(img, shape, affine, interpolation="nearest"):
    """``img`` on the (``shape``, ``affine``) grid: itself when it is already there, else
    resampled (nearest by default: masks and labels keep their values)."""
    if is_on_grid(img, shape, affine):
        return img
    return resample_img(
        img, target_affine=affine, target_shape=tuple(shape), interpolation=interpolation
    )


def on_grid_of(img, reference, interpolation="nearest"):
    """``img`` on ``reference``'s grid (see :func:`to_grid`)."""
    return to_grid(img, reference.shape[:3], reference.affine, interpolation)
