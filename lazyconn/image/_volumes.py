"""nilearn's image helpers that reshape, split, join or check images, lazy where they can be.

``concat_imgs``, ``iter_img``, ``reorder_img``, ``swap_img_hemispheres``, ``copy_img`` and the
``check_niimg*`` checkers only build graphs (slicing, flipping, stacking: nothing is read).
``crop_img`` computes the bounding box of the non-negligible voxels (one pass over the data,
a few bytes of result) and returns a lazy crop. ``largest_connected_component_img`` needs
the whole volume at once (a global labelling): it computes, as a mask step does.
"""

from __future__ import annotations

import glob
import numbers
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from lazyconn._utils import rechunk, warn
from lazyconn.exceptions import (
    DimensionError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._load import load
from lazyconn.image._niimg import check_same_fov, new_img_like
from lazyconn.ops import spatial
from lazyconn.ops.spheres import coord_transform_flat

__all__ = [
    "check_niimg",
    "check_niimg_3d",
    "check_niimg_4d",
    "concat_imgs",
    "coord_transform",
    "copy_img",
    "crop_img",
    "iter_img",
    "largest_connected_component_img",
    "reorder_img",
    "swap_img_hemispheres",
]


# ---------------------------------------------------------------------------------------
# checkers
# ---------------------------------------------------------------------------------------
def _expand(niimg, wildcards: bool):
    """A path with glob wildcards -> sorted list of paths (nilearn's rule)."""
    if not isinstance(niimg, (str, Path)) or not wildcards:
        return niimg
    text = str(niimg)
    if "://" in text or not glob.has_magic(text):
        return niimg
    found = sorted(glob.glob(str(Path(text).expanduser())))
    if not found:
        raise ParameterError(
            f"niimg={text!r}: no files match this wildcard expression; expected at least one "
            "image (pass wildcards=False for a path that contains *, ? or [)."
        )
    return found


def _target_dtype(dtype, target):
    if target is None:
        return None
    if isinstance(target, str) and target == "auto":
        target = np.int32 if np.dtype(dtype).kind == "i" else np.float32
    target = np.dtype(target)
    return None if target == np.dtype(dtype) else target


def _with_dtype(img: LazyImage, dtype) -> LazyImage:
    target = _target_dtype(img.dtype, dtype)
    return img if target is None else img.with_data(img.data.astype(target))


def check_niimg(
    niimg,
    ensure_ndim=None,
    atleast_4d: bool = False,
    dtype=None,
    return_iterator: bool = False,
    wildcards: bool = True,
):
    """Load an image (or a list of images) as a LazyImage and check its dimension.

    As ``nilearn.image.check_niimg``; nothing is read.

    Parameters
    ----------
    niimg : image, path, glob expression or list of images
        Anything :func:`lazyconn.load` accepts; a list (or a glob expression matching
        several files, sorted) is concatenated along time with :func:`concat_imgs`.
    ensure_ndim : {3, 4, None}
        Required dimension (DimensionError otherwise). A 4-D image of one volume is
        squeezed to 3-D when 3 is required, as nilearn.
    atleast_4d : bool
        Give a 3-D image a time axis of length 1.
    dtype : numpy dtype, "auto" or None
        Cast to this dtype ("auto": int32 for integers, float32 otherwise).
    return_iterator : bool
        Return an iterator over the 3-D volumes instead.
    wildcards : bool
        Expand ``*``, ``?`` and ``[...]`` in a path (sorted), as nilearn.

    Returns
    -------
    LazyImage or iterator of LazyImage
    """
    niimg = _expand(niimg, wildcards)
    if isinstance(niimg, (list, tuple)):
        if return_iterator:
            return _iter_checked(niimg, ensure_ndim, dtype)
        return concat_imgs(niimg, ensure_ndim=ensure_ndim, dtype=dtype)
    img = load(niimg)
    if ensure_ndim == 3 and img.ndim == 4 and img.shape[3] == 1:
        img = img.with_data(img.data[..., 0])
    if img.ndim == 3:
        if return_iterator and not atleast_4d:
            raise DimensionError(
                f"niimg has shape {img.shape} (3-D); expected a 4-D image to iterate over "
                "its volumes."
            )
        if atleast_4d:
            img = img.with_data(img.data[..., None])
    if ensure_ndim is not None and img.ndim != ensure_ndim:
        raise DimensionError(
            f"niimg has shape {img.shape} ({img.ndim}-D); expected a {ensure_ndim}-D image."
        )
    img = _with_dtype(img, dtype)
    if return_iterator:
        return (_volume(img, i) for i in range(img.shape[3]))
    return img


def _iter_checked(niimgs, ensure_ndim, dtype):
    ndim = None if ensure_ndim is None else ensure_ndim - 1
    for i, niimg in enumerate(niimgs):
        img = check_niimg(niimg, ensure_ndim=ndim, dtype=dtype)
        if i == 0:
            ref = img
        else:
            check_same_fov(ref, img, names=["niimgs[0]", f"niimgs[{i}]"])
        yield img


def check_niimg_3d(niimg, dtype=None) -> LazyImage:
    """``check_niimg(niimg, ensure_ndim=3, dtype=dtype)``, as ``nilearn.image.check_niimg_3d``.

    Parameters
    ----------
    niimg : image or path
        A 3-D image (a 4-D image of one volume is squeezed).
    dtype : numpy dtype, "auto" or None
        Cast to this dtype.

    Returns
    -------
    LazyImage
    """
    return check_niimg(niimg, ensure_ndim=3, dtype=dtype)


def check_niimg_4d(niimg, return_iterator: bool = False, dtype=None):
    """``check_niimg(niimg, ensure_ndim=4, ...)``, as ``nilearn.image.check_niimg_4d``.

    Parameters
    ----------
    niimg : 4-D image, path, or list of 3-D images
        A list of 3-D images is concatenated along time.
    return_iterator : bool
        Return an iterator over the 3-D volumes instead.
    dtype : numpy dtype, "auto" or None
        Cast to this dtype.

    Returns
    -------
    LazyImage or iterator of LazyImage
    """
    return check_niimg(niimg, ensure_ndim=4, return_iterator=return_iterator, dtype=dtype)


# ---------------------------------------------------------------------------------------
# joining and splitting
# ---------------------------------------------------------------------------------------
def _volume(img: LazyImage, i: int) -> LazyImage:
    return new_img_like(img, img.data[..., i], img.affine)


def concat_imgs(
    niimgs,
    dtype=np.float32,
    ensure_ndim=None,
    memory=None,
    memory_level=0,
    auto_resample=False,
    verbose=0,
) -> LazyImage:
    """Concatenate 3-D and/or 4-D images along time into one 4-D LazyImage (lazy).

    As ``nilearn.image.concat_imgs``: the first image sets the dimension of all
    (DimensionError for another) and the grid (GridMismatchError for another, unless
    ``auto_resample``: then images are resampled onto the first one's grid, with nilearn's
    warning); the result has ``dtype`` (None: the first image's).

    Parameters
    ----------
    niimgs : list of images, or a glob expression
        Images to concatenate (3-D ones count as one volume).
    dtype : numpy dtype or None, default=np.float32
    ensure_ndim : {4, 5, None}
        Dimension of the input seen as a whole (a list of 3-D images is 4-D).
    memory, memory_level, verbose
        Accepted for nilearn parity and ignored (dask builds no intermediate).
    auto_resample : bool, default=False
        Resample every image onto the first image's grid.

    Returns
    -------
    LazyImage
        Time chunks are merged (whole time axis per chunk, lazyconn's layout).
    """
    del memory, memory_level, verbose
    niimgs = _expand(niimgs, True)
    if isinstance(niimgs, (str, Path, LazyImage)) or hasattr(niimgs, "affine"):
        niimgs = [niimgs]
    niimgs = list(niimgs)
    if not niimgs:
        raise ParameterTypeError("niimgs=[]: cannot concatenate empty objects; expected images.")
    ndim = None if ensure_ndim is None else ensure_ndim - 1
    imgs = [load(im) for im in niimgs]
    first = imgs[0]
    ndim = first.ndim if ndim is None else ndim
    if ndim not in (3, 4):
        raise DimensionError(
            f"Concatenated images must be 3-D or 4-D; ensure_ndim={ensure_ndim!r} asks for "
            f"{ndim}-D images."
        )
    parts = []
    for i, img in enumerate(imgs):
        if img.ndim != ndim:
            raise DimensionError(
                f"niimgs[{i}] has shape {img.shape} ({img.ndim}-D); expected {ndim}-D images "
                f"like niimgs[0] (shape {first.shape})."
            )
        if not check_same_fov(first, img, raise_error=not auto_resample):
            from lazyconn.image.resampling import resample_img

            warn(
                "Affine is different across subjects. Realignment on first subject affine forced",
                LazyconnWarning,
            )
            img = resample_img(img, target_affine=first.affine, target_shape=first.shape[:3])
        data = img.data if ndim == 4 else img.data[..., None]
        parts.append(data)
    out_dtype = first.dtype if dtype is None else np.dtype(dtype)
    data = rechunk(da.concatenate([p.astype(out_dtype) for p in parts], axis=3), {3: -1})
    return new_img_like(first, data, first.affine)


def iter_img(imgs):
    """Iterate over the 3-D volumes of a 4-D image (or of a list of 3-D images), lazily.

    As ``nilearn.image.iter_img``: a generator of 3-D LazyImages; a 3-D image is a
    DimensionError.

    Parameters
    ----------
    imgs : 4-D image or list of 3-D images

    Returns
    -------
    generator of LazyImage
    """
    return check_niimg_4d(imgs, return_iterator=True)


def copy_img(img) -> LazyImage:
    """A copy of an image (voxels, affine, header), as ``nilearn.image.copy_img``.

    A LazyImage's voxels are an immutable dask graph, so the copy shares it (nothing is
    read); affine and header are copied.

    Parameters
    ----------
    img : nibabel image or LazyImage
        nilearn accepts only image objects (ParameterTypeError for a path, as nilearn's
        TypeError).

    Returns
    -------
    LazyImage
    """
    if not hasattr(img, "affine") or not hasattr(img, "header"):
        raise ParameterTypeError(
            f"img={img!r} has type {type(img).__name__}; expected a nibabel image or a "
            "LazyImage (copy_img copies image objects, as nilearn)."
        )
    img = load(img)
    return LazyImage(img.data, img.affine.copy(), img.header, source=img.source)


# ---------------------------------------------------------------------------------------
# cropping and reordering
# ---------------------------------------------------------------------------------------
def crop_img(img, rtol=1e-8, copy=True, pad=True, return_offset=False, copy_header=True):
    """Crop an image to the box of its non-negligible voxels, as ``nilearn.image.crop_img``.

    The box (voxels with ``|value| > rtol * max|value|``, any time point) is computed: one
    lazy pass over the data giving three small per-axis vectors. The crop itself is a
    lazy slice.

    Parameters
    ----------
    img : 3-D or 4-D image
    rtol : float, default=1e-08
        Relative tolerance (to the largest absolute value) under which values are cropped.
    copy : bool, default=True
        Accepted for nilearn parity (dask arrays are never modified in place).
    pad : bool, default=True
        Keep one voxel of zeros around the box.
    return_offset : bool, default=False
        Also return the slices of the original image kept in the crop.
    copy_header : bool, default=True

    Returns
    -------
    LazyImage, or (LazyImage, tuple of slices) with ``return_offset``
        An image with no value above the tolerance is returned whole, with nilearn's
        warning.
    """
    del copy
    img = load(img)
    data = img.data
    norm = da.maximum(-data.min(), data.max())
    passes = (data < -rtol * norm) | (data > rtol * norm)
    if passes.ndim == 4:
        passes = passes.any(axis=3)
    profiles = dask.compute(
        *(passes.any(axis=tuple(a for a in range(3) if a != ax)) for ax in range(3))
    )
    if not all(p.any() for p in profiles):
        warn(f"No values above {rtol}. Returning original image.", LazyconnWarning)
        start, end, pad = np.zeros(3, int), np.asarray(img.shape[:3]), False
    else:
        start = np.asarray([np.flatnonzero(p)[0] for p in profiles])
        end = np.asarray([np.flatnonzero(p)[-1] + 1 for p in profiles])
    if pad:
        start = np.maximum(start - 1, 0)
        end = np.minimum(end + 1, img.shape[:3])
    slices = tuple(slice(int(s), int(e)) for s, e in zip(start, end, strict=True))
    affine = np.eye(4)
    affine[:3, :3] = img.affine[:3, :3]
    affine[:3, 3] = img.affine[:3, 3] + img.affine[:3, :3] @ start
    cropped = new_img_like(img, data[slices], affine, copy_header=copy_header)
    return (cropped, slices) if return_offset else cropped


def reorder_img(img, resample=None, copy_header=True) -> LazyImage:
    """Flip and permute axes so the affine is diagonal and positive (lazy), as nilearn.

    Parameters
    ----------
    img : 3-D or 4-D image
    resample : None or {"continuous", "linear", "nearest"}
        For an affine with rotations: None raises ParameterError (nilearn's ValueError);
        otherwise the image is resampled onto a diagonal affine of the same voxel sizes.
    copy_header : bool, default=True

    Returns
    -------
    LazyImage
    """
    img = load(img)
    affine = img.affine.copy()
    lin = affine[:3, :3]
    if not np.all((np.abs(lin) > 0.001).sum(axis=0) == 1):
        if resample is None:
            raise ParameterError(
                "Cannot reorder the axes: the image affine contains rotations; pass "
                "resample='continuous', 'linear' or 'nearest' to resample it."
            )
        from lazyconn.image.resampling import resample_img

        q, r = np.linalg.qr(lin)
        target = np.diag(np.abs(np.diag(r))[np.abs(q).argmax(axis=1)])
        return resample_img(img, target_affine=target, interpolation=resample)
    data = img.data
    order = np.argsort(np.argmax(np.abs(lin), axis=0))  # data axis for each world axis
    if np.any(order != np.arange(3)):
        data = data.transpose(*order, *range(3, data.ndim))
        affine[:, :3] = affine[:, :3][:, order]
    pixdim = np.diag(affine[:3, :3]).copy()
    b = affine[:3, 3].copy()
    flips = []
    for ax in range(3):
        if pixdim[ax] < 0:
            b[ax] += pixdim[ax] * (data.shape[ax] - 1)
            pixdim[ax] = -pixdim[ax]
            flips.append(slice(None, None, -1))
        else:
            flips.append(slice(None))
    data = data[tuple(flips)]
    new_affine = np.eye(4)
    new_affine[:3, :3] = np.diag(pixdim)
    new_affine[:3, 3] = b
    return new_img_like(img, data, new_affine, copy_header=copy_header)


def swap_img_hemispheres(img) -> LazyImage:
    """Mirror a 3-D image left-right (after ``reorder_img``), as nilearn (lazy).

    Parameters
    ----------
    img : 3-D image
        Assumed sagittally aligned (nilearn's note); the affine is unchanged.

    Returns
    -------
    LazyImage
    """
    img = reorder_img(check_niimg_3d(img))
    return new_img_like(img, img.data[::-1], img.affine)


def largest_connected_component_img(imgs):
    """The largest 6-connected component of 3-D image(s), as nilearn (computes).

    Labelling is global, so each volume is read whole (a mask-sized compute, like the mask
    functions); the result is a LazyImage over the in-memory boolean volume (uint8).

    Parameters
    ----------
    imgs : 3-D image or list of 3-D images

    Returns
    -------
    LazyImage or list of LazyImage
        A volume with no non-zero voxel is a ParameterError (nilearn's ValueError).
    """
    single = not isinstance(imgs, (list, tuple))
    out = []
    for img in [imgs] if single else imgs:
        img = check_niimg_3d(img)
        vol = np.asarray(img.data.compute())
        if not np.any(vol):
            raise ParameterError(
                "No non-zero values: no connected components (the image is all zeros); "
                "expected an image with at least one non-zero voxel."
            )
        out.append(new_img_like(img, spatial.largest_connected_component(vol), img.affine))
    return out[0] if single else out


def coord_transform(x, y, z, affine):
    """Apply an affine to coordinates, as ``nilearn.image.coord_transform``.

    Parameters
    ----------
    x, y, z : number or array-like
        Coordinates (same shapes).
    affine : (4, 4) array

    Returns
    -------
    tuple of 3 numbers (number input) or arrays of the input's shape
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise DimensionError(f"affine has shape {affine.shape}; expected (4, 4).")
    squeeze = not hasattr(x, "__iter__")
    is_number = isinstance(x, numbers.Number)
    shape = np.asanyarray(x).shape
    tx, ty, tz = coord_transform_flat(x, y, z, affine)
    if is_number:
        return tx.item(), ty.item(), tz.item()
    if squeeze:
        return tx.squeeze(), ty.squeeze(), tz.squeeze()
    return tx.reshape(shape), ty.reshape(shape), tz.reshape(shape)
