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

from lazyconn._progress import Progress
from lazyconn._utils import check_positive
from lazyconn.io._fs import check_url, get_fs, redact
from lazyconn.io._locks import WriterLock
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
    batch_bytes: int | None = None,
    progress: bool = False,
):
    """Write ``img`` as a lazyconn store at ``dst`` (see ``LazyImage.to_zarr``)."""
    dst = check_url("dst", dst)
    check_positive("batch_bytes", batch_bytes, allow_none=True)
    source = img._raw[2] if getattr(img, "_raw", None) is not None else None
    if source is not None:
        # An unmodified NIfTI file: the streaming conversion (bounded memory, one
        # decompression pass) instead of a dask rechunk from time slabs.
        from lazyconn.io.convert import convert

        out = convert(
            source.url,
            dst,
            chunks=chunks,
            overwrite=overwrite,
            compressor=compressor,
            storage_options=source.storage_options,
            dst_storage_options=storage_options,
            progress=False,
            compute=compute,
        )
        return None if compute else out
    header_bytes, raw = header_bytes_for(img)
    lock = WriterLock(dst, storage_options)
    lock.acquire(overwrite)  # a second writer refuses before touching the store
    try:
        prepare_destination(dst, storage_options, overwrite)
        array = create_store(
            dst,
            header_bytes=header_bytes,
            chunks=chunks,
            compressor=compressor,
            storage_options=storage_options,
            source=img.source,
            writer=lock.record,
        )
        if not compute:  # the final task marks the store complete and releases the lock
            return _write_graph(raw, array, dst, storage_options, lock)
        _write_batches(raw, array, batch_bytes, progress)
        mark_complete(dst, storage_options, writer=lock.record["token"])  # last
    except BaseException:
        lock.release()
        raise
    lock.release()
    return None


def _write_graph(raw, array, dst, storage_options, lock):
    stored = _stored(raw, array)
    writes = da.store(stored, array, lock=False, compute=False)
    return dask.delayed(_complete_after)(writes, dst, storage_options, lock)


def _stored(raw, array):
    stored = raw.transpose(tuple(range(raw.ndim))[::-1]).rechunk(array.chunks)
    if stored.dtype != array.dtype:  # e.g. big-endian file data: store native order
        stored = stored.astype(array.dtype)
    return stored


def _write_batches(raw, array, batch_bytes, progress) -> None:
    stored = _stored(raw, array)
    regions = batch_regions(stored.chunks, stored.dtype.itemsize, batch_bytes)
    with Progress("write: batches", len(regions), enabled=progress) as bar:
        for region in regions:
            da.store(stored[region], array, regions=region, lock=False)
            bar.update()


#: Default ``batch_bytes`` of ``LazyImage.to_zarr``: output bytes computed per batch.
#: One HCP-size block-row ((12, 14, 91) voxels x 1200 volumes, float32) is 73 MB.
DEFAULT_BATCH_BYTES = 128 * 2**20


def batch_regions(chunks, itemsize: int, batch_bytes: int | None = None) -> list[tuple]:
    """Regions of a stored (t, z, y, x) array to write one ``da.store`` at a time.

    dask keeps many blocks alive when one graph mixes halos (smoothing's map_overlap)
    with whole-time-axis steps (peak RSS ~1.2x the run); computing rows of blocks (one
    x-block, one y-block, all z and t) in turn bounds memory to a batch and its
    neighbours' halos. Consecutive rows are grouped while the batch's output bytes stay
    within ``batch_bytes`` (at least one row per batch). Batches are rectangular: a run
    of y-blocks of one x-block, or whole x-blocks when a full x-block fits.
    """
    if batch_bytes is None:
        batch_bytes = DEFAULT_BATCH_BYTES
    lead = tuple(slice(None) for _ in chunks[:-2])
    ex = np.cumsum((0, *chunks[-1]))
    ey = np.cumsum((0, *chunks[-2]))
    lead_voxels = math.prod(sum(c) for c in chunks[:-2])
    row_bytes = lead_voxels * itemsize * max(chunks[-1]) * max(chunks[-2])
    if row_bytes * len(chunks[-1]) * len(chunks[-2]) <= batch_bytes:
        return [lead + (slice(None), slice(None))]  # all fits: one graph
    rows = max(1, int(batch_bytes // row_bytes))
    n_x, n_y = len(ex) - 1, len(ey) - 1
    regions = []
    if rows >= n_y:  # whole x-blocks per batch
        step = rows // n_y
        for i in range(0, n_x, step):
            j = min(i + step, n_x)
            regions.append(lead + (slice(None), slice(int(ex[i]), int(ex[j]))))
        return regions
    for i in range(n_x):
        for k in range(0, n_y, rows):
            m = min(k + rows, n_y)
            regions.append(
                lead + (slice(int(ey[k]), int(ey[m])), slice(int(ex[i]), int(ex[i + 1])))
            )
    return regions


def _complete_after(_writes, dst, storage_options, lock):
    try:
        mark_complete(dst, storage_options, writer=lock.record["token"])
    finally:
        lock.release()


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
