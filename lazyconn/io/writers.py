"""Writing images: lazyconn zarr stores (``LazyImage.to_zarr``) and NIfTI files.

Takes any object with ``data`` (dask array), ``affine``, ``header``, ``source`` and
``_raw`` (LazyImage); this layer does not import the image layer.
"""

from __future__ import annotations

import gzip
import math

import dask
import dask.array as da
import nibabel as nib
import numpy as np

from lazyconn.io._fs import check_url, get_fs, redact
from lazyconn.io.store import create_store, mark_complete, prepare_destination


def header_bytes_for(img) -> tuple[bytes, da.Array]:
    """(NIfTI header bytes, voxels to store) of an image.

    An image opened from a file/store gives back its own header bytes and unscaled
    voxels (lossless). Otherwise a header is made from ``img.header`` and ``img.affine``
    for the data as they are (no scaling), the way nibabel would save them.
    """
    if getattr(img, "_raw", None) is not None:
        raw, header_bytes = img._raw[:2]
        return header_bytes, raw
    data = img.data
    klass = nib.Nifti2Image if isinstance(img.header, nib.Nifti2Header) else nib.Nifti1Image
    # A zero-strided stand-in: nibabel only needs shape and dtype to fill the header.
    stub = np.broadcast_to(np.zeros((), dtype=data.dtype), data.shape)
    nii = klass(stub, img.affine, img.header)
    nii.update_header()
    header = nii.header
    header.set_slope_inter(None, None)
    base = 540 if isinstance(header, nib.Nifti2Header) else 348
    ext = sum(e.get_sizeondisk() for e in header.extensions)
    offset = int(math.ceil((base + 4 + ext) / 16) * 16)
    header.set_data_offset(offset)
    import io

    buf = io.BytesIO()
    header.write_to(buf)
    return buf.getvalue().ljust(offset, b"\0"), data


def write_store(
    img,
    dst,
    *,
    chunks=None,
    compressor="default",
    overwrite: bool = False,
    storage_options: dict | None = None,
    compute: bool = True,
):
    """Write ``img`` as a lazyconn store at ``dst`` (see ``LazyImage.to_zarr``)."""
    dst = check_url("dst", dst)
    source = img._raw[2] if getattr(img, "_raw", None) is not None else None
    if source is not None:
        # An unmodified NIfTI file: the streaming conversion (bounded memory, one
        # decompression pass) instead of a dask rechunk from time slabs.
        from lazyconn.io.convert import convert

        out = convert(
            source.url, dst, chunks=chunks, overwrite=overwrite, compressor=compressor,
            storage_options=source.storage_options, dst_storage_options=storage_options,
            progress=False, compute=compute,
        )
        return None if compute else out
    header_bytes, raw = header_bytes_for(img)
    prepare_destination(dst, storage_options, overwrite)
    array = create_store(
        dst, header_bytes=header_bytes, chunks=chunks, compressor=compressor,
        storage_options=storage_options, source=img.source,
    )
    stored = raw.transpose(tuple(range(raw.ndim))[::-1]).rechunk(array.chunks)
    if stored.dtype != array.dtype:  # e.g. big-endian file data: store native order
        stored = stored.astype(array.dtype)
    writes = da.store(stored, array, lock=False, compute=False)
    done = dask.delayed(_complete_after)(writes, dst, storage_options)
    if compute:
        done.compute()
        return None
    return done


def _complete_after(_writes, dst, storage_options):
    mark_complete(dst, storage_options)


def write_nifti(img, filename, *, storage_options: dict | None = None) -> None:
    """Write ``img`` to a ``.nii`` / ``.nii.gz`` path or URL.

    Header bytes first, then the voxels in file order. The voxels are computed in one
    go (meant for results and small images; ``lazyconn.convert`` is the streaming path
    for runs).
    """
    filename = check_url("filename", filename)
    header_bytes, raw = header_bytes_for(img)
    from lazyconn.io.nifti import parse_header

    hdr = parse_header(header_bytes, "header", "header")
    values = np.asarray(raw.compute()).astype(hdr.get_data_dtype(), copy=False)
    fs, path = get_fs(filename, storage_options)
    try:
        with fs.open(path, "wb") as fobj:
            out = gzip.GzipFile(fileobj=fobj, mode="wb", mtime=0) if path.endswith(".gz") else fobj
            out.write(header_bytes)
            out.write(values.tobytes(order="F"))
            if out is not fobj:
                out.close()
    except PermissionError:
        from lazyconn.exceptions import OutputNotWritableError

        raise OutputNotWritableError(
            f"filename={redact(filename)!r} cannot be written (permission denied); expected a "
            "writable destination."
        ) from None
