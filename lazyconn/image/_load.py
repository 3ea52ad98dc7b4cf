"""``load``: turn anything image-like into a LazyImage (opening reads only the header)."""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np

from lazyconn._utils import is_path_like, rechunk
from lazyconn.config import default_chunks
from lazyconn.exceptions import ParameterTypeError
from lazyconn.image._lazyimage import LazyImage

#: What a path given to :func:`load` may be, for messages.
ACCEPTED_PATHS = (
    "a .nii or .nii.gz file, or a lazyconn zarr store (a folder ending in .zarr, made by "
    "lazyconn.convert or `lazyconn convert`)"
)


def load(src, *, storage_options=None, chunks=None) -> LazyImage:
    """Open an image lazily: only the header is read; voxels are read per chunk on compute.

    Parameters
    ----------
    src : LazyImage, nibabel image, or path / URL to a ``.nii``, ``.nii.gz`` or lazyconn zarr store
        URLs are fsspec URLs (``s3://bucket/run.nii.gz``, ``file:///data/run.zarr``).
    storage_options : dict, optional
        Passed to fsspec for URLs (credentials, endpoint...). Never shown in reprs,
        messages or written metadata.
    chunks : tuple, optional
        Chunk shape of the dask array; default: spatial blocks with the whole time axis
        for ``.nii`` files, the stored chunks for zarr stores, and time slabs (whole
        volumes, the on-disk order) for ``.nii.gz`` files, whose decompression is
        sequential. Convert ``.nii.gz`` runs to zarr (``lazyconn.convert``) for processing.

    Returns
    -------
    LazyImage
        Values equal nibabel's scaled data (``nibabel.load(src).dataobj[...]``), with
        its dtype.

    Raises
    ------
    InputNotFoundError, InputFileError, IncompleteStoreError, DimensionError, ParameterError
        Missing file, unreadable/truncated file, interrupted store, not 3-D/4-D, unknown
        URL scheme.
    """
    from lazyconn.io._fs import shared_lookups

    # one request per remote object: the checks below ask about the same zarr.json
    with shared_lookups():
        return _load(src, storage_options, chunks)


def _load(src, storage_options, chunks) -> LazyImage:
    from lazyconn.io._dask import store_arrays
    from lazyconn.io._fs import check_exists, check_url, redact
    from lazyconn.io.nifti import NiftiFile, check_ndim
    from lazyconn.io.store import is_store, open_store

    if isinstance(src, LazyImage):
        return src if chunks is None else src.with_data(rechunk(src.data, chunks))
    if isinstance(src, nib.spatialimages.SpatialImage):
        filename = src.get_filename()
        if (
            isinstance(src, (nib.Nifti1Image, nib.Nifti2Image))
            and nib.is_proxy(src.dataobj)
            and filename
            and str(filename).endswith((".nii", ".nii.gz"))
        ):
            # File-backed: read the file per chunk, never the whole run here.
            return _nifti_image(NiftiFile(filename), chunks, redact(filename), src.affine)
        arr = np.asanyarray(src.dataobj)
        check_ndim("src", "<in-memory image>", arr.shape)
        if chunks is None:
            chunks = default_chunks(arr.shape, arr.dtype)
        header = src.header if isinstance(src.header, nib.Nifti1Header) else None
        return LazyImage(da.from_array(arr, chunks=chunks), src.affine, header)
    if is_path_like(src):
        url = check_url("src", src)
        name = str(url).rstrip("/")
        # every accepted kind in the message: a mistyped store path is not asked to be a .nii
        check_exists("src", url, storage_options, expected=ACCEPTED_PATHS)
        if not name.endswith((".nii", ".nii.gz")) and is_store(url, storage_options):
            info = open_store(url, storage_options)
            data, raw, mean = store_arrays(info, chunks)
            return LazyImage(
                data,
                info.affine,
                info.header,
                source=redact(url),
                _raw=(raw, info.header_bytes, None, mean),
            )
        return _nifti_image(NiftiFile(url, storage_options), chunks, redact(url))
    raise ParameterTypeError(
        f"src={src!r} has type {type(src).__name__}; expected a LazyImage, a nibabel image, "
        "or a path/URL to a .nii, .nii.gz or lazyconn zarr store."
    )


def _nifti_image(nifti, chunks, source, affine=None) -> LazyImage:
    """A LazyImage reading the opened NIfTI file ``nifti`` per chunk (``affine``: the
    header's best affine unless given)."""
    from lazyconn.io._dask import nifti_arrays

    data, raw = nifti_arrays(nifti, chunks)
    if affine is None:
        affine = nifti.header.get_best_affine()
    return LazyImage(
        data, affine, nifti.header, source=source, _raw=(raw, nifti.header_bytes, nifti, None)
    )
