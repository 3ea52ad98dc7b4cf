"""Writing images: lazyconn zarr stores (``LazyImage.to_zarr``) and NIfTI files.

Takes any object with ``data`` (dask array), ``affine``, ``header``, ``source`` and
``_raw`` (LazyImage); this layer does not import the image layer.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import queue
import tempfile
import threading
import uuid

import dask
import dask.array as da
import nibabel as nib
import numpy as np

from lazyconn._progress import Progress
from lazyconn._utils import check_positive, rechunk
from lazyconn.exceptions import OutputNotWritableError, ParameterError
from lazyconn.io._fs import atomic_local_file, check_url, get_fs, is_local, local_path, redact
from lazyconn.io._locks import WriterLock, scratch_name
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
    # What nibabel's to_filename records for data written without scaling.
    header.set_slope_inter(1.0, 0.0)
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
    stored = rechunk(raw.transpose(tuple(range(raw.ndim))[::-1]), array.chunks)
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


#: Bytes of voxels :func:`write_nifti` holds at once by default (slabs in flight, or the
#: blocks being staged): its memory bound whatever the image's size.
DEFAULT_NIFTI_BUDGET = 256 * 2**20
#: Compression level of ``.nii.gz`` output: nibabel's (1: fast; the voxels of fMRI runs
#: gain little from higher levels). ISA-L's level 1 (zlib's when ``isal`` cannot be imported).
GZIP_LEVEL = 1


def write_nifti(
    img,
    filename,
    *,
    storage_options: dict | None = None,
    budget_bytes: int | None = None,
    scratch_dir=None,
    strategy: str | None = None,
) -> None:
    """Write ``img`` to a ``.nii`` / ``.nii.gz`` path or URL, streamed with bounded memory.

    Header bytes first, then the voxels in file order (x fastest, then y, z, t), one slab
    of volumes (z planes for a 3-D image) at a time; a ``.nii.gz`` is compressed as it is
    written (ISA-L, a dependency; zlib at nibabel's level with nibabel's gzip header if
    ``isal`` cannot be imported: then the file is byte for byte nibabel's). The file appears under its name only once
    complete (a temporary name, then a rename).

    Two ways of making the slabs (``strategy``; by default the one that computes every
    chunk of the image once):

    - ``"slabs"``: compute each slab of the image directly. Used when the image's chunks
      are time slabs no larger than a slab (e.g. a ``.nii.gz`` opened as it is); on
      whole-time chunks (stores) it would compute every chunk once per slab, with a
      memory use that depends on the graph (kept for measuring: ``benchmarks/README.md``).
    - ``"staged"``: one pass computes the image's chunks (in batches of ``budget_bytes /
      2``) and stages each chunk's piece of every slab, compressed (Blosc LZ4), in a scratch
      file in ``scratch_dir``; each slab is then assembled from its pieces (the reverse of
      ``convert``'s staging).

    Memory: up to three slabs of ``budget_bytes / 4`` each (being filled, queued, being
    compressed) or one batch of chunks while staging, and at least one volume per slab.
    """
    filename = check_url("filename", filename)
    check_positive("budget_bytes", budget_bytes, allow_none=True)
    if strategy not in (None, "slabs", "staged"):
        raise ParameterError(
            f"strategy={strategy!r} is not valid; expected None, 'slabs' or 'staged'."
        )
    budget = DEFAULT_NIFTI_BUDGET if budget_bytes is None else int(budget_bytes)
    header_bytes, raw = header_bytes_for(img)
    from lazyconn.io.nifti import parse_header

    dtype = parse_header(header_bytes, "header", "header").get_data_dtype()
    raw = raw.astype(dtype) if raw.dtype != dtype else raw
    frame = math.prod(raw.shape[:-1]) * dtype.itemsize
    per_slab = max(1, budget // 4 // max(frame, 1))
    if strategy is None:
        strategy = "slabs" if max(raw.chunks[-1]) <= per_slab else "staged"
    if strategy == "slabs":
        slabs = _direct_slabs(raw, per_slab)
    else:
        slabs = _staged_slabs(raw, per_slab, max(1, budget // 2), scratch_dir)
    try:
        with _atomic_output(filename, storage_options) as fobj:
            out = _gzip_writer(fobj) if filename.endswith(".gz") else fobj
            with _WriterThread(out) as writer:
                writer.put(header_bytes)
                for slab in slabs:
                    # A Fortran-ordered slab's transpose is C-contiguous: the file's bytes.
                    writer.put(memoryview(np.asfortranarray(slab).T).cast("B"))
            if out is not fobj:
                out.close()
    except PermissionError:
        raise OutputNotWritableError(
            f"filename={redact(filename)!r} cannot be written (permission denied); expected a "
            "writable destination."
        ) from None
    finally:
        slabs.close()


def _slab_groups(n: int, per_slab: int, chunks=None) -> list[tuple[int, int]]:
    """(start, stop) along the last axis: ``per_slab`` at a time, or (``chunks`` given)
    whole chunks, as many as fit in ``per_slab`` (at least one)."""
    if chunks is None:
        return [(a, min(a + per_slab, n)) for a in range(0, n, per_slab)]
    groups, start, stop = [], 0, 0
    for c in chunks:
        if stop > start and stop + c - start > per_slab:
            groups.append((start, stop))
            start = stop
        stop += c
    groups.append((start, stop))
    return groups


def _direct_slabs(raw, per_slab: int):
    """Each slab computed from the image (aligned with its chunks along the last axis
    when they fit in a slab, so each chunk is computed once)."""
    fits = max(raw.chunks[-1]) <= per_slab
    for a, b in _slab_groups(raw.shape[-1], per_slab, raw.chunks[-1] if fits else None):
        yield np.asarray(raw[..., a:b].compute())


def _block_batches(raw, batch_bytes: int) -> list[list[tuple]]:
    """The image's block indices in order, grouped while a group's bytes fit."""
    itemsize = raw.dtype.itemsize
    batches, current, size = [], [], 0
    for idx in np.ndindex(*raw.numblocks):
        nbytes = math.prod(c[i] for c, i in zip(raw.chunks, idx, strict=True)) * itemsize
        if current and size + nbytes > batch_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(idx)
        size += nbytes
    if current:
        batches.append(current)
    return batches


def _staged_slabs(raw, per_slab: int, batch_bytes: int, scratch_dir):
    """Slabs assembled from compressed per-block pieces staged in one pass over the blocks."""
    from lazyconn.io.convert import _pread, _stage_codec, _write_all

    n = raw.shape[-1]
    groups = _slab_groups(n, per_slab)
    edges = [np.cumsum((0, *c)) for c in raw.chunks]
    scratch_dir = os.fspath(scratch_dir) if scratch_dir is not None else tempfile.gettempdir()
    os.makedirs(scratch_dir, exist_ok=True)
    path = scratch_name(scratch_dir)
    codec = _stage_codec()
    index: dict = {g: [] for g in range(len(groups))}  # slab -> (region, offset, nbytes)
    try:
        with open(path, "wb", buffering=0) as scratch:
            offset = 0
            for batch in _block_batches(raw, batch_bytes):
                blocks = dask.compute(*[raw.blocks[idx] for idx in batch])
                for idx, block in zip(batch, blocks, strict=True):
                    lo = [int(e[i]) for e, i in zip(edges, idx, strict=True)]
                    t0, t1 = lo[-1], lo[-1] + block.shape[-1]
                    for g, (a, b) in enumerate(groups):
                        if b <= t0 or a >= t1:
                            continue
                        # Stored as (t, z, y, x) in C order, as the slab's transpose.
                        piece = np.ascontiguousarray(
                            block[..., max(a, t0) - t0 : min(b, t1) - t0].T
                        )
                        data = codec.encode(piece)
                        _write_all(scratch, data)
                        start = [*lo[:-1], max(a, t0) - a]
                        index[g].append((start, piece.shape, offset, len(data)))
                        offset += len(data)
                del blocks, block  # before the next batch is computed
        fd = os.open(path, os.O_RDONLY)
        try:
            biggest = max((n for pieces in index.values() for *_, n in pieces), default=1)
            packed = np.empty(biggest, dtype=np.uint8)
            for g, (a, b) in enumerate(groups):
                slab = np.empty(raw.shape[:-1] + (b - a,), dtype=raw.dtype, order="F")
                flipped = slab.T  # C-contiguous (t, z, y, x)
                for start, shape, offset, nbytes in index[g]:
                    _pread(fd, packed[:nbytes], offset)
                    piece = np.empty(shape, dtype=raw.dtype)
                    codec.decode(packed[:nbytes], out=piece)
                    region = tuple(
                        slice(s, s + k) for s, k in zip(start[::-1], shape, strict=True)
                    )
                    flipped[region] = piece
                yield slab
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)


#: Largest piece handed to the (compressing) output at once.
_WRITE_PIECE_BYTES = 256 * 2**10


class _WriterThread:
    """Writes (and, for ``.gz``, compresses) in a thread while the next slab is computed;
    at most one buffer waits. A write error stops the producer at its next ``put``."""

    def __init__(self, out):
        self.out = out
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.failed: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="lazyconn-nifti-writer", daemon=True)

    def _run(self):
        while (data := self.queue.get()) is not None:
            if not self.failed:
                try:
                    # In pieces: a compressor returns its output for each write as one new
                    # buffer, which would otherwise be as large as the slab (noisy data).
                    view = memoryview(data)
                    for start in range(0, len(view), _WRITE_PIECE_BYTES):
                        self.out.write(view[start : start + _WRITE_PIECE_BYTES])
                except BaseException as exc:  # raised in the producer
                    self.failed.append(exc)

    def put(self, data) -> None:
        if self.failed:
            raise self.failed[0]
        self.queue.put(data)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.queue.put(None)
        self.thread.join()
        if self.failed and exc[0] is None:
            raise self.failed[0]
        return False


def _gzip_writer(fobj):
    """A gzip stream over ``fobj`` as nibabel writes it (no file name, mtime 0, level 1);
    ISA-L's compressor (several times faster, other bytes, same content); zlib's if ``isal``
    cannot be imported."""
    try:
        from isal import igzip

        return igzip.GzipFile(
            filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=fobj, mtime=0
        )
    except ImportError:  # pragma: no cover - depends on the environment
        return gzip.GzipFile(
            filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=fobj, mtime=0
        )


@contextlib.contextmanager
def _atomic_output(filename: str, storage_options: dict | None):
    """A binary file object for ``filename`` written under a temporary name in the same
    place and renamed when complete; removed if writing fails."""

    if is_local(filename):
        final = local_path(filename)
        if not os.path.isdir(os.path.dirname(os.path.abspath(final))):
            raise OutputNotWritableError(
                f"filename={redact(filename)!r} cannot be written: its directory does not "
                "exist; expected a path in an existing directory."
            )
        with atomic_local_file(final) as fobj:
            yield fobj
        return
    fs, path = get_fs(filename, storage_options)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.lazyconn-tmp"
    try:
        with fs.open(tmp, "wb") as fobj:
            yield fobj
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise
