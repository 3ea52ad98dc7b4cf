"""``load``: turn anything image-like into a LazyImage (opening reads only the header)."""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np

from lazyconn.config import default_chunks
from lazyconn.exceptions import ParameterTypeError
from lazyconn.image._lazyimage import LazyImage


def load(src, *, storage_options=None, chunks=None) -> LazyImage:
    """Open an image lazily.

    Parameters
    ----------
    src : LazyImage, nibabel image, or path / URL to a ``.nii``, ``.nii.gz`` or lazyconn zarr store
    storage_options : dict, optional
        Passed to fsspec for URLs (credentials, endpoint...).
    chunks : tuple, optional
        Chunk shape of the dask array; default: spatial blocks with the whole time axis.
    """
    if isinstance(src, LazyImage):
        return src if chunks is None else src.with_data(src.data.rechunk(chunks))
    if isinstance(src, nib.spatialimages.SpatialImage):
        arr = np.asanyarray(src.dataobj)
        if chunks is None:
            chunks = default_chunks(arr.shape, arr.dtype)
        header = src.header if isinstance(src.header, nib.Nifti1Header) else None
        return LazyImage(da.from_array(arr, chunks=chunks), src.affine, header)
    raise ParameterTypeError(
        f"src={src!r} has type {type(src).__name__}; expected a LazyImage, a nibabel image, "
        "or a path/URL to a .nii, .nii.gz or lazyconn zarr store."
    )
