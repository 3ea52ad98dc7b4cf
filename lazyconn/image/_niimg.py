"""Loading and checking images: the coercion helpers every image function starts from.

``load_img``/``load_3d``/``load_4d`` turn anything :func:`lazyconn.load` accepts (or a list of
3-D images) into a LazyImage of the expected dimension; ``check_same_fov`` and
``load_mask_img`` validate grids and masks; ``new_img_like`` builds a result on a reference's
grid. They sit below ``image.py`` and ``resampling.py``, which both use them.
"""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np

from lazyconn._docs import fill_doc
from lazyconn._utils import rechunk, warn
from lazyconn.config import default_chunks
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    LazyconnWarning,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._load import load
from lazyconn.image._runarray import RunArray
from lazyconn.ops import spatial


# ---------------------------------------------------------------------------------------
# input coercion and checks (shared with resampling, masking, _cleaning)
# ---------------------------------------------------------------------------------------
def _is_list_of_images(obj) -> bool:
    return isinstance(obj, (list, tuple))


def load_img(img, name: str = "img") -> LazyImage:
    """``load`` a 3-D or 4-D image; a list of 3-D images is stacked along time."""
    if _is_list_of_images(img):
        return _stack(img, name)
    return load(img)


def _stack(imgs, name: str) -> LazyImage:
    if len(imgs) == 0:
        raise ParameterError(f"{name}=[] is empty; expected at least one image.")
    loaded = [load(im) for im in imgs]
    for i, im in enumerate(loaded):
        if im.ndim != 3:
            raise DimensionError(
                f"{name}[{i}] has shape {im.shape} ({im.ndim}-D); a list of images must "
                "hold 3-D images (they are stacked along time into one 4-D image)."
            )
    check_same_fov(*loaded, names=[f"{name}[{i}]" for i in range(len(loaded))])
    first = loaded[0]
    data = rechunk(da.stack([im.data for im in loaded], axis=-1), {3: -1})
    return LazyImage(data, first.affine, first.header, source=first.source)


def load_4d(imgs, name: str = "imgs") -> LazyImage:
    """A 4-D LazyImage from a 4-D image or a list of 3-D images (DimensionError otherwise)."""
    img = load_img(imgs, name)
    if img.ndim != 4:
        raise DimensionError(
            f"{name} has shape {img.shape} ({img.ndim}-D); expected a 4-D image "
            "(or a list of 3-D images)."
        )
    return img


def load_3d(img, name: str = "img") -> LazyImage:
    """A 3-D LazyImage; a 4-D image with one volume is squeezed, as nilearn does."""
    img = load(img) if not _is_list_of_images(img) else load_img(img, name)
    if img.ndim == 4 and img.shape[3] == 1:
        img = LazyImage(img.data[..., 0], img.affine, img.header, source=img.source)
    if img.ndim != 3:
        raise DimensionError(f"{name} has shape {img.shape} ({img.ndim}-D); expected a 3-D image.")
    return img


def check_same_fov(*imgs, names=None, raise_error: bool = True) -> bool:
    """True if all images share shape[:3] and affine (np.allclose), as nilearn.

    Parameters
    ----------
    *imgs
        Images (LazyImage, nibabel images or paths); only their headers are read.
    names : list of str, optional
        Names of the images in the error message (default ``img0``, ``img1``...).
    raise_error : bool, default=True
        Raise a GridMismatchError naming both images' shapes and affines instead of
        returning False (nilearn returns False).

    Returns
    -------
    bool
    """
    names = names or [f"img_#{i}" for i in range(len(imgs))]
    ref, ref_name = imgs[0], names[0]
    for img, name in zip(imgs[1:], names[1:], strict=True):
        same = tuple(img.shape[:3]) == tuple(ref.shape[:3]) and np.allclose(img.affine, ref.affine)
        if not same:
            if not raise_error:
                return False
            raise GridMismatchError(
                f"{ref_name} (shape {tuple(ref.shape[:3])}, affine "
                f"{np.round(ref.affine, 4).tolist()}) and {name} (shape "
                f"{tuple(img.shape[:3])}, affine {np.round(img.affine, 4).tolist()}) are not "
                "on the same voxel grid; expected equal shapes and affines. Resample one "
                "onto the other with lazyconn.image.resample_to_img."
            )
    return True


def finite_data(data: np.ndarray) -> np.ndarray:
    """nilearn's ``safe_get_data(..., ensure_finite=True)`` on computed voxels: NaN/inf
    become 0, with nilearn's warning (used on masks, atlases and maps, which are computed
    anyway; a run's values are not checked, as that would read it)."""
    if data.dtype.kind in "fc" and not np.isfinite(data).all():
        warn(
            "Non-finite values detected. These values will be replaced with zeros.",
            LazyconnWarning,
        )
        return spatial.ensure_finite(data)
    return data


def load_mask_img(mask_img, allow_empty: bool = False, name: str = "mask_img"):
    """Validate and read a mask (eager: masks are small): (bool numpy array, affine).

    As nilearn's ``masking.load_mask_img``: NaN/inf -> 0, then the mask must hold 0 and one
    other value (ParameterError otherwise) and must not be empty unless ``allow_empty``.

    Parameters
    ----------
    mask_img : 3-D image, or path
        The mask (a lazy image is computed: masks are small).
    allow_empty : bool, default=False
        Accept a mask without any voxel.
    name : str, default="mask_img"
        lazyconn only: the parameter name used in error messages.

    Returns
    -------
    mask : numpy.ndarray of bool
    affine : (4, 4) numpy.ndarray
    """
    if isinstance(mask_img, nib.spatialimages.SpatialImage) and len(mask_img.shape) == 3:
        # In memory or on disk already: read it without a dask compute.
        data, affine = np.asanyarray(mask_img.dataobj), mask_img.affine
    else:
        img = load_3d(mask_img, name)
        data, affine = np.asarray(img.data.compute()), img.affine
    data = finite_data(data)
    values = np.unique(data)
    if len(values) == 1:
        if values[0] == 0 and not allow_empty:
            raise ParameterError(
                f"{name} is invalid as it is empty: it masks all data (every voxel is 0)."
            )
    elif len(values) == 2:
        if 0 not in values:
            raise ParameterError(
                f"{name}: background of the mask must be represented with 0. "
                f"Given mask contains: {values}."
            )
    else:
        shown = values if len(values) < 8 else f"{values[:7]}... ({len(values)} values)"
        raise ParameterError(
            f"{name} is not made of 2 values: {shown}. Cannot interpret as true or false; "
            "expected 0 for background and one value for the mask."
        )
    return data.astype(bool), affine


# ---------------------------------------------------------------------------------------
# basic constructors
# ---------------------------------------------------------------------------------------
@fill_doc
def new_img_like(ref_niimg, data, affine=None, copy_header=True) -> LazyImage:
    """A new LazyImage on the reference's grid (nilearn's ``new_img_like``).

    ``data`` may be a numpy or dask array. bool data become uint8. int64 numpy data that fit
    are cast to int32 with a warning, as nilearn; int64 *dask* data are kept (checking the
    range would compute). The header is copied from the reference (``copy_header=True``)
    with its scaling reset; unlike nilearn its data dtype is set to the new data's dtype.

    Parameters
    ----------
    ref_niimg : image, or path
        Reference image: its affine (and header) are used.
    data : numpy or dask array
        Voxels of the new image, 3-D or 4-D.
    affine : (4, 4) array, optional
        Affine of the new image; default: the reference's.
    %(copy_header)s

    Returns
    -------
    LazyImage
    """
    if _is_list_of_images(ref_niimg):
        ref_niimg = ref_niimg[0]
    ref = load(ref_niimg)
    if not isinstance(data, (np.ndarray, da.Array)):
        raise ParameterTypeError(
            f"data has type {type(data).__name__}; expected a numpy or dask array."
        )
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if isinstance(data, np.ndarray) and data.dtype in (np.int64, np.uint64) and data.size:
        info = np.iinfo(np.int32)
        if info.min <= data.min() and data.max() <= info.max:
            warn(
                "Data array used to create a new image contains 64-bit ints; "
                "converted to int32 for compatibility (as nilearn does).",
                LazyconnWarning,
            )
            data = data.astype(np.int32)
        else:
            warn(
                "Data array used to create a new image contains 64-bit ints, and some values "
                "too large to store in 32-bit ints. The resulting image thus contains 64-bit "
                "ints (as nilearn), which other tools may not read.",
                LazyconnWarning,
            )
    if isinstance(data, np.ndarray):
        data = da.from_array(data, chunks=_default_chunks_for(data))
    header = None
    if copy_header:
        header = ref.header.copy()
        header.set_slope_inter(None, None)
    return LazyImage(data, ref.affine if affine is None else affine, header, source=None)


def _default_chunks_for(arr):
    return default_chunks(arr.shape, arr.dtype)


@fill_doc
def get_data(img, compute: bool = True):
    """The voxels of an image, as ``nilearn.image.get_data``.

    Parameters
    ----------
    %(img)s
    compute : bool, default=True
        lazyconn addition. True: read the voxels and return a numpy array, as nilearn.
        False: return the lazy dask array (nothing is read), to keep building a graph.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        The voxels with the image's dtype. With ``compute=False`` a 4-D run is a
        :class:`~lazyconn.image.RunArray`: a dask array whose selections of volumes
        (``data[..., labels == "face"]``) remember the run, so that ``lazyconn.stats``'
        t-tests on several selections of it read each chunk once for all of them.
    """
    img = load_img(img)
    data = img.data
    if compute:
        return np.asarray(data.compute())
    return RunArray.of(data, img._volumewise) if data.ndim == 4 else data
