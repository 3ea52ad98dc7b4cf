"""Streaming NIfTI(.gz) -> lazyconn zarr conversion with a bounded memory budget.

A stored chunk holds the whole time axis, but a NIfTI is time-slowest on disk and a
``.nii.gz`` can only be read sequentially. The conversion therefore runs in two steps
per file (measured alternatives and figures: ``docs/format.md``):

1. *stage*: one sequential pass decompresses (or, for a remote ``.nii``, downloads) the
   voxel bytes; a second thread splits each volume into the stored chunks' regions and,
   every ``_STAGE_VOLUMES`` volumes, appends each chunk's piece (Blosc LZ4 + shuffle) to a
   scratch file on local disk. Memory: the pieces being filled; the file is several times
   smaller than the voxels (masked runs: ~5x), so little reaches the page cache or disk.
2. *assemble*: each work unit (the ``x`` chunks of one ``(y, z)`` chunk row) decompresses
   each chunk's pieces straight into that chunk's buffer (pieces are shaped as the chunk)
   and writes it, and its voxels' temporal mean (the store's ``mean`` array, which
   ``mean_img`` and the EPI masks read instead of the run). Units run in parallel; each
   holds one chunk.

A local uncompressed ``.nii`` skips staging: units read the source file in place
(``os.preadv``, one contiguous run per time point and z plane).
The store's completion marker is written by a final task after every unit, so an
interrupted conversion leaves a store that ``load`` refuses and ``convert`` redoes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import dask
import numpy as np
import zarr
from dask.base import tokenize

from lazyconn._progress import dask_progress, futures_progress
from lazyconn._utils import check_type
from lazyconn.config import default_chunks, mean_dtype
from lazyconn.exceptions import (
    IncompleteStoreError,
    InputFileError,
    ParameterError,
)
from lazyconn.io._fs import check_url, check_writable, get_fs, is_local, local_path, redact
from lazyconn.io._locks import WriterLock, scratch_name, sweep_stale_scratch, terminate_cleanly
from lazyconn.io.nifti import INFLATE_ERRORS as _INFLATE_ERRORS
from lazyconn.io.nifti import NiftiFile, header_bytes_with_dtype, scale
from lazyconn.io.nifti import fast_zlib as _inflate
from lazyconn.io.store import (
    DATA_PATH,
    MEAN_PATH,
    _zarr_store,
    check_chunks,
    create_store,
    is_store,
    mark_complete,
    open_store,
    prepare_destination,
)

#: Bytes of voxels one work unit holds (one per thread). Big enough that a unit is a
#: whole-x row of chunks for HCP-sized runs with default chunks (91 x 14 x 23 x 1200 x 4 B
#: = 141 MB), so each pread is a whole run of contiguous bytes.
DEFAULT_UNIT_BYTES = 160 * 2**20
#: Compressed input read per inflate call (small: the output of one call then fits in
#: ``_INFLATE_MAX`` and the input is consumed whole, so zlib copies no unconsumed tail).
_STAGE_BLOCK = 256 * 2**10
#: Most bytes one inflate call may return (bounds memory on highly compressed data).
_INFLATE_MAX = 16 * 2**20
#: Volumes per staged piece: each unit's region of that many volumes is compressed as one
#: piece (16 HCP volumes: 58 MB held while they fill, pieces of ~1.8 MB per unit), fewer
#: if that would exceed ``_STAGE_BYTES``.
_STAGE_VOLUMES = 16
_STAGE_BYTES = 64 * 2**20


class _Job:
    """Everything one file's conversion tasks need (small and picklable)."""

    def __init__(
        self,
        nifti,
        dst,
        dst_options,
        header_bytes,
        out_dtype,
        chunks,
        unit_bytes,
        scratch_dir,
        lock=None,
    ):
        #: set by _make_job: ``(overwrite, compressor)`` for creating the store when run
        self.create_args = (False, "default")
        self.nifti = nifti
        self.dst = dst
        self.dst_options = dst_options
        self.header_bytes = header_bytes
        self.out_dtype = out_dtype  # None: store the file's unscaled values
        self.shape4 = tuple(nifti.shape) + (1,) * (4 - nifti.ndim)
        self.chunks4 = tuple(chunks) + (1,) * (4 - len(chunks))
        self.scratch_dir = scratch_dir
        self.scratch_path = scratch_name(scratch_dir)  # names this host and pid (sweepable)
        self.lock = lock  # the destination's WriterLock, released by _finish
        self.in_place = is_local(nifti.url) and not nifti.compressed
        # The stored values' scaling when read back (none once scaled to ``out_dtype``).
        self.read_scaling = (nifti.slope, nifti.inter) if out_dtype is None else (1.0, 0.0)
        self.units = _plan_units(self.shape4, self.chunks4, nifti.raw_dtype.itemsize, unit_bytes)
        self.token = tokenize(nifti.token, dst, chunks, out_dtype, unit_bytes)

    def __repr__(self):
        return f"<convert {redact(self.nifti.url)!r} -> {redact(self.dst)!r}>"


def _plan_units(shape4, chunks4, itemsize, unit_bytes):
    """(x0, x1, y0, y1, z0, z1) work units: one (y, z) chunk row, whole x if it fits."""
    X, Y, Z, T = shape4
    cx, cy, cz, _ = chunks4
    per_x_chunk = cx * cy * cz * T * itemsize
    x_step = max(1, unit_bytes // max(per_x_chunk, 1)) * cx
    units = []
    for z0 in range(0, Z, cz):
        for y0 in range(0, Y, cy):
            for x0 in range(0, X, x_step):
                units.append((x0, min(x0 + x_step, X), y0, min(y0 + cy, Y), z0, min(z0 + cz, Z)))
    return units


# --- the tasks --------------------------------------------------------------------
def _stage(job: _Job):
    """Where the units read the raw voxels: ``(path, offset)`` of the source itself (a
    local ``.nii``), or the :class:`_Staged` pieces of a local scratch file.

    Creates the destination store first (see ``_create_destination``).
    """
    _create_destination(job)
    nifti = job.nifti
    if job.in_place:
        return local_path(nifti.url), nifti.offset
    os.makedirs(job.scratch_dir, exist_ok=True)
    scratch = job.scratch_path
    try:
        fs, path = get_fs(nifti.url, nifti.storage_options)
        with open(scratch, "wb", buffering=0) as out, fs.open(path, "rb") as src:
            stager = _Stager(job, out)
            _reserve(out, stager.max_bytes, job.scratch_dir)
            written = _copy_voxels(src, stager, nifti)
        if written < nifti.data_nbytes:
            raise InputFileError(
                f"src={redact(nifti.url)!r} is truncated: it holds {written} voxel bytes; "
                f"expected {nifti.data_nbytes} ({nifti.shape} {nifti.raw_dtype})."
            )
    except BaseException:
        _remove_scratch(job)
        raise
    return _Staged(scratch, stager.index)


class _Staged:
    """A staged run: the scratch file and, per unit, its pieces ``(t0, t1, offset, n)``."""

    def __init__(self, path: str, index: dict):
        self.path = path
        self.index = index


def _stage_codec():
    from numcodecs import Blosc

    # LZ4 at level 1 behind a byte shuffle (typesize from the array): ~1.6 GB/s per core,
    # ~5x smaller on masked runs. Off the main thread numcodecs runs it single-threaded.
    return Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)


class _Stager:
    """Splits the voxel byte stream into the stored chunks' regions and appends them,
    compressed ``_STAGE_VOLUMES`` volumes at a time, to the scratch file ``out``.

    A piece is shaped as its chunk, ``(volumes, cz, cy, cx)`` (edge chunks padded with
    zeros, as zarr stores them), so a unit decompresses a chunk's pieces straight into
    the chunk it encodes: no other copy of the voxels.
    """

    def __init__(self, job: _Job, out):
        X, Y, Z, T = job.shape4
        cx, cy, cz, _ = job.chunks4
        self.dtype = job.nifti.raw_dtype
        self.shape3 = (Z, Y, X)  # a volume in file order (x fastest)
        self.frame = X * Y * Z * self.dtype.itemsize
        self.n_volumes = T
        self.n_x = -(-X // cx)
        self.chunk3 = (cz, cy, cx)
        # The volume padded to whole chunks (zeros stay in the margins), so that each
        # (y, z) chunk row splits into its x chunks with one reshape.
        self.padded = np.zeros((-(-Z // cz) * cz, -(-Y // cy) * cy, self.n_x * cx), self.dtype)
        self.group = max(1, min(T, _STAGE_VOLUMES, _STAGE_BYTES // max(1, self.padded.nbytes)))
        self.rows = {  # (y, z) chunk row -> its pieces, (x chunk, volume, cz, cy, cx)
            (y0 // cy, z0 // cz): np.zeros((self.n_x, self.group, cz, cy, cx), self.dtype)
            for z0 in range(0, Z, cz)
            for y0 in range(0, Y, cy)
        }
        self.volume = np.empty(self.frame, dtype=np.uint8)
        self.fill = 0
        self.done = 0  # volumes staged
        self.index: dict = {(xi, yi, zi): [] for (yi, zi) in self.rows for xi in range(self.n_x)}
        self.offset = 0
        self.out = out
        self.codec = _stage_codec()
        n_pieces = len(self.index) * -(-T // self.group)
        self.max_bytes = T * self.padded.nbytes + 64 * n_pieces  # incompressible, headers

    def feed(self, data) -> None:
        """Take the next bytes of the voxel stream (any length)."""
        src = np.frombuffer(data, dtype=np.uint8)
        pos = 0
        while pos < src.size:
            n = min(self.frame - self.fill, src.size - pos)
            if n == self.frame:  # a whole volume in place: no copy
                self._add(src[pos : pos + n])
            else:
                self.volume[self.fill : self.fill + n] = src[pos : pos + n]
                self.fill += n
                if self.fill == self.frame:
                    self._add(self.volume)
                    self.fill = 0
            pos += n

    def _add(self, flat: np.ndarray) -> None:
        Z, Y, X = self.shape3
        cz, cy, cx = self.chunk3
        self.padded[:Z, :Y, :X] = flat.view(self.dtype).reshape(self.shape3)
        k = self.done % self.group
        for (yi, zi), row in self.rows.items():
            part = self.padded[zi * cz : (zi + 1) * cz, yi * cy : (yi + 1) * cy]
            row[:, k] = part.reshape(cz, cy, self.n_x, cx).transpose(2, 0, 1, 3)
        self.done += 1
        if k + 1 == self.group or self.done == self.n_volumes:
            self._flush(k + 1)

    def _flush(self, n: int) -> None:
        t0 = self.done - n
        for (yi, zi), row in self.rows.items():
            for xi in range(self.n_x):
                data = self.codec.encode(row[xi, :n])
                _write_all(self.out, data)
                self.index[(xi, yi, zi)].append((t0, self.done, self.offset, len(data)))
                self.offset += len(data)


def _write_all(fobj, data) -> None:
    view = memoryview(data)
    while view:
        view = view[fobj.write(view) :]


def _reserve(fobj, nbytes: int, scratch_dir: str) -> None:
    """Allocate the scratch file's worst case up front: a full disk fails now, clearly."""
    try:
        os.posix_fallocate(fobj.fileno(), 0, nbytes)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _no_room(nbytes, scratch_dir) from None
        # Filesystems without fallocate: plain writes still work.


def _no_room(nbytes: int, scratch_dir: str):
    from lazyconn.exceptions import OutputNotWritableError

    return OutputNotWritableError(
        f"scratch_dir={scratch_dir!r} has no room for {nbytes} bytes of staged voxels; "
        "expected a local directory with that much free space (pass scratch_dir=)."
    )


def _remove_scratch(job: _Job) -> None:
    if not job.in_place:
        with contextlib.suppress(OSError):
            os.remove(job.scratch_path)


def _copy_voxels(src, stager: _Stager, nifti) -> int:
    """Stream the voxel bytes of ``src`` (gzip or not) into ``stager``; return bytes fed.

    A second thread runs the stager (splitting, compression, page-cache writes) while
    this one inflates (both release the GIL); the queue holds at most 8 blocks.
    """
    writes: queue.Queue = queue.Queue(maxsize=8)
    failed: list[BaseException] = []

    def writer():
        while (data := writes.get()) is not None:
            if not failed:
                try:
                    stager.feed(data)
                except BaseException as exc:  # reported by the producer
                    failed.append(exc)

    thread = threading.Thread(target=writer, name="lazyconn-stage-writer", daemon=True)
    thread.start()
    skip, remaining = nifti.offset, nifti.data_nbytes
    state = _inflate.decompressobj(31) if nifti.compressed else None
    pending = b""
    try:
        while remaining > 0 and not failed:
            if not pending:
                pending = src.read(_STAGE_BLOCK if state is not None else 4 * 2**20)
                if not pending:
                    break
            if state is None:
                data, pending = pending, b""
            else:
                try:
                    data = state.decompress(pending, _INFLATE_MAX)
                except _INFLATE_ERRORS as exc:
                    raise InputFileError(
                        f"src={redact(nifti.url)!r} is corrupt: gzip data error ({exc}); "
                        "expected a valid .nii.gz."
                    ) from None
                pending = state.unconsumed_tail
                if state.eof:
                    pending = state.unused_data
                    state = _inflate.decompressobj(31)
            if skip:
                cut = min(skip, len(data))
                data, skip = data[cut:], skip - cut
            data = data[:remaining]
            if data:
                writes.put(data)
            remaining -= len(data)
    finally:
        writes.put(None)
        thread.join()
    if failed:
        exc = failed[0]
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise _no_room(nifti.data_nbytes, os.path.dirname(stager.out.name)) from None
        raise exc
    return nifti.data_nbytes - remaining


def _read_staged(fd, staged: _Staged, key, chunk: np.ndarray) -> np.ndarray:
    """Decompress the staged pieces of chunk ``key`` (x, y, z) into ``chunk`` (t, z, y, x)."""
    codec = _stage_codec()
    pieces = staged.index[key]
    raw = _STAGED_BUFFERS.acquire(max(n for *_, n in pieces))
    try:
        for t0, t1, offset, n in pieces:
            _pread(fd, raw[:n], offset)
            codec.decode(raw[:n], out=chunk[t0:t1])
    finally:
        _STAGED_BUFFERS.release(raw)
    return chunk


def _read_unit(fd, base, job: _Job, unit, buf: np.ndarray) -> np.ndarray:
    """The unit's voxels as a (t, z, y, x) array in the file's dtype (in ``buf``), via preadv."""
    x0, x1, y0, y1, z0, z1 = unit
    X, Y, Z, T = job.shape4
    dtype = job.nifti.raw_dtype
    item = dtype.itemsize
    block = buf[: T * (z1 - z0) * (y1 - y0) * (x1 - x0) * item]
    block = block.view(dtype).reshape(T, z1 - z0, y1 - y0, x1 - x0)
    frame = X * Y * Z * item
    full_x, full_y = (x0, x1) == (0, X), (y0, y1) == (0, Y)
    flat = block.reshape(T, -1).view(np.uint8)
    for t in range(T):
        row = flat[t]
        if full_x and full_y:  # the z planes are one run
            _pread(fd, row, base + t * frame + z0 * X * Y * item)
            continue
        for zi, z in enumerate(range(z0, z1)):
            if full_x:  # each z plane's y rows are one run
                n = (y1 - y0) * X * item
                _pread(fd, row[zi * n : (zi + 1) * n], base + t * frame + (z * Y + y0) * X * item)
            else:
                n = (x1 - x0) * item
                for yi, y in enumerate(range(y0, y1)):
                    k = (zi * (y1 - y0) + yi) * n
                    _pread(fd, row[k : k + n], base + t * frame + ((z * Y + y) * X + x0) * item)
    return block


class _BufferPool:
    """Unit buffers reused across units (no fresh pages to fault in for every unit).

    At most one buffer per running unit; ``clear`` drops the idle ones when a
    conversion ends so no memory is held afterwards.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: list[np.ndarray] = []

    def acquire(self, nbytes: int) -> np.ndarray:
        """A buffer of at least ``nbytes`` (slice it); give it back with ``release``."""
        with self._lock:
            fits = [i for i, buf in enumerate(self._idle) if buf.size >= nbytes]
            if fits:
                return self._idle.pop(min(fits, key=lambda i: self._idle[i].size))
            self._idle.clear()  # too small: let them go before allocating
        return np.empty(nbytes, dtype=np.uint8)

    def release(self, buf: np.ndarray) -> None:
        with self._lock:
            self._idle.append(buf)

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()


_BUFFERS = _BufferPool()  # unit buffers
_CHUNK_BUFFERS = _BufferPool()  # one encoded chunk's contiguous copy
_STAGED_BUFFERS = _BufferPool()  # one staged piece's compressed bytes


def _pread(fd, buf: np.ndarray, offset: int) -> None:
    view = memoryview(buf)
    got = os.preadv(fd, [view], offset)
    while 0 < got < len(view):  # short reads are legal
        more = os.preadv(fd, [view[got:]], offset + got)
        if more == 0:
            break
        got += more
    if got < len(view):
        raise InputFileError(f"unexpected end of voxel data at byte {offset + got}.")


def _writers(job: _Job):
    """(voxels, temporal mean) chunk writers of the job's store (mean: None for 3-D)."""
    group = zarr.open_group(_zarr_store(job.dst, job.dst_options, read_only=False), mode="r+")
    mean = _ChunkWriter(group[MEAN_PATH]) if job.nifti.ndim == 4 else None
    return _ChunkWriter(group[DATA_PATH]), mean


def _temporal_mean(stored: np.ndarray, slope=1.0, inter=0.0) -> np.ndarray:
    """Each voxel's mean over time (axis 0) of stored (t, z, y, x) values read with
    ``slope``/``inter``, computed as dask's ``mean(axis=-1, dtype=float64)`` of the read
    chunk does (float64 sum, divide, numpy's mean dtype): the stored mean equals
    ``mean_img`` of the run bit for bit."""
    values = stored if (slope, inter) in ((1.0, 0.0), (1, 0)) else scale(stored, slope, inter)
    total = np.sum(values, axis=0, dtype=np.float64)
    return np.divide(total, values.shape[0], dtype=np.float64).astype(mean_dtype(values.dtype))


def _write_mean(writer, coords, region, stored: np.ndarray, job: _Job) -> None:
    """The temporal mean of one stored chunk's voxels (``stored``: unpadded) into ``mean``."""
    writer.write(coords[1:], region[1:], _temporal_mean(stored, *job.read_scaling))


def _write_unit(staged, job: _Job, unit) -> int:
    if isinstance(staged, _Staged):
        return _write_staged_unit(staged, job, unit)
    x0, x1, y0, y1, z0, z1 = unit
    buf = _BUFFERS.acquire(
        job.shape4[3] * (z1 - z0) * (y1 - y0) * (x1 - x0) * job.nifti.raw_dtype.itemsize
    )
    try:
        return _write_block(staged, job, unit, buf)
    finally:
        _BUFFERS.release(buf)


def _to_stored(block: np.ndarray, job: _Job) -> np.ndarray:
    """The file's values as stored: scaled to ``out_dtype``, or in native byte order."""
    if job.out_dtype is not None:
        return scale(block, job.nifti.slope, job.nifti.inter).astype(job.out_dtype)
    if not block.dtype.isnative:
        return block.astype(block.dtype.newbyteorder("="))
    return block


def _write_staged_unit(staged: _Staged, job: _Job, unit) -> int:
    """Each chunk of the unit: its staged pieces decompressed into it, then encoded."""
    x0, x1, y0, y1, z0, z1 = unit
    cx, cy, cz, _ = job.chunks4
    dtype = job.nifti.raw_dtype
    shape = (job.shape4[3], cz, cy, cx)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    writer, means = _writers(job)
    buf = _BUFFERS.acquire(nbytes)  # one chunk, not the unit
    fd = os.open(staged.path, os.O_RDONLY)
    try:
        for xs in range(x0, x1, cx):
            chunk = buf[:nbytes].view(dtype).reshape(shape)
            _read_staged(fd, staged, (xs // cx, y0 // cy, z0 // cz), chunk)
            chunk = _to_stored(chunk, job)
            n = (min(xs + cx, x1) - xs, y1 - y0, z1 - z0)
            region = (slice(None), slice(z0, z1), slice(y0, y1), slice(xs, xs + n[0]))
            coords = (0, z0 // cz, y0 // cy, xs // cx)
            if job.nifti.ndim == 3:
                chunk, coords, region = chunk[0], coords[1:], region[1:]
            else:
                _write_mean(means, coords, region, chunk[:, : n[2], : n[1], : n[0]], job)
            writer.write_padded(coords, region, chunk)
    finally:
        os.close(fd)
        _BUFFERS.release(buf)
    return job.shape4[3] * (x1 - x0) * (y1 - y0) * (z1 - z0) * dtype.itemsize


def _write_block(staged, job: _Job, unit, buf) -> int:
    path, base = staged
    fd = os.open(path, os.O_RDONLY)
    try:
        block = _read_unit(fd, base, job, unit, buf)
    finally:
        os.close(fd)
    block = _to_stored(block, job)
    x0, x1, y0, y1, z0, z1 = unit
    writer, means = _writers(job)
    cx, cy, cz, _ = job.chunks4
    # One chunk at a time: copies and compressed bytes stay one chunk big.
    for xs in range(x0, x1, cx):
        piece = block[..., xs - x0 : min(xs + cx, x1) - x0]
        coords = (0, z0 // cz, y0 // cy, xs // cx)
        region = (slice(None), slice(z0, z1), slice(y0, y1), slice(xs, xs + piece.shape[-1]))
        if job.nifti.ndim == 3:
            piece, coords, region = piece[0], coords[1:], region[1:]
        else:
            _write_mean(means, coords, region, piece, job)
        writer.write(coords, region, piece)
    return block.nbytes


class _ChunkWriter:
    """Write whole chunks: encoded here and stored as one key, or through zarr.

    For the codecs lazyconn writes (bytes, then optionally Blosc) the chunk bytes are made
    with the array's own Blosc codec object and stored directly (tests check the store reads
    back identically): this skips zarr's per-write selection machinery, about a third of the
    assembly CPU time. Any other codec chain goes through ``array[region] = piece``.
    """

    def __init__(self, array):
        import zarr.codecs

        self.array = array
        codecs = list(array.metadata.codecs)
        # A trailing crc32c (the store's checksum) is appended here as zarr would.
        self.crc = bool(codecs) and isinstance(codecs[-1], zarr.codecs.Crc32cCodec)
        if self.crc:
            codecs.pop()
        little = np.dtype("<u2").isnative
        self.fast = (
            1 <= len(codecs) <= 2
            and isinstance(codecs[0], zarr.codecs.BytesCodec)
            and (codecs[0].endian is None or (codecs[0].endian.value == "little") == little)
            and (len(codecs) == 1 or isinstance(codecs[1], zarr.codecs.BloscCodec))
        )
        self.encoder = None
        if self.fast and len(codecs) == 2:
            self.encoder = getattr(codecs[1], "_blosc_codec", None)
            self.fast = self.encoder is not None
        self.chunk_shape = tuple(array.chunks)

    def write(self, coords, region, piece: np.ndarray) -> None:
        if not self.fast:
            self.array[region] = piece
            return
        dtype = np.dtype(self.array.dtype)
        nbytes = int(np.prod(self.chunk_shape)) * dtype.itemsize
        buf = _CHUNK_BUFFERS.acquire(nbytes)
        try:
            chunk = buf[:nbytes].view(dtype).reshape(self.chunk_shape)
            if piece.shape != self.chunk_shape:  # edge chunk: zarr stores it padded with 0
                chunk[...] = 0
            chunk[tuple(slice(0, n) for n in piece.shape)] = piece
            self._store(coords, chunk)
        finally:
            _CHUNK_BUFFERS.release(buf)

    def write_padded(self, coords, region, chunk: np.ndarray) -> None:
        """Write a whole chunk-shaped array (an edge chunk padded) covering ``region``."""
        if not self.fast:
            sel = tuple(
                slice(None) if r.stop is None else slice(0, r.stop - r.start) for r in region
            )
            self.array[region] = chunk[sel]
            return
        self._store(coords, np.ascontiguousarray(chunk, dtype=np.dtype(self.array.dtype)))

    def _store(self, coords, chunk: np.ndarray) -> None:
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        data = self.encoder.encode(chunk) if self.encoder is not None else chunk.tobytes()
        key = self.array.metadata.encode_chunk_key(coords)
        if self.array.path:
            key = f"{self.array.path}/{key}"
        if self.crc:
            import google_crc32c  # zarr's own crc32c dependency

            data = b"".join((data, google_crc32c.value(data).to_bytes(4, "little")))
        buffer = default_buffer_prototype().buffer.from_bytes(data)
        sync(self.array.store_path.store.set(key, buffer))


def _finish(_units, staged, job: _Job) -> str:
    token = job.lock.record["token"] if job.lock is not None else None
    mark_complete(job.dst, job.dst_options, writer=token)
    _remove_scratch(job)
    if job.lock is not None:
        job.lock.release()
    return job.dst


def _convert_one(job: _Job, n_threads: int = 2) -> str:
    """All of one file's steps in one task (distributed: the scratch file stays local)."""
    job.scratch_path = scratch_name(job.scratch_dir)  # this worker's host and pid
    sweep_stale_scratch(job.scratch_dir)
    staged = _stage(job)
    try:
        with ThreadPoolExecutor(n_threads) as pool:
            done = list(pool.map(lambda u: _write_unit(staged, job, u), job.units))
    except BaseException:
        _remove_scratch(job)
        job.lock.release()  # taken by _stage in this process
        raise
    finally:
        _BUFFERS.clear()
        _CHUNK_BUFFERS.clear()
        _STAGED_BUFFERS.clear()
    return _finish(done, staged, job)


def _graph(job: _Job):
    """Local dask graph of one file: stage -> units -> finish."""
    staged = dask.delayed(_stage, pure=True)(job, dask_key_name=f"convert-stage-{job.token}")
    units = [
        dask.delayed(_write_unit, pure=True)(
            staged, job, unit, dask_key_name=f"convert-unit-{job.token}-{i}"
        )
        for i, unit in enumerate(job.units)
    ]
    return dask.delayed(_finish, pure=True)(
        units, staged, job, dask_key_name=f"convert-finish-{job.token}"
    )


def _client():
    try:
        from distributed import get_client
    except ImportError:  # pragma: no cover
        return None
    try:
        return get_client()
    except ValueError:
        return None


# --- public -----------------------------------------------------------------------
def convert(
    src,
    dst,
    *,
    chunks=None,
    overwrite: bool = False,
    dtype=None,
    compressor="default",
    storage_options: dict | None = None,
    dst_storage_options: dict | None = None,
    unit_bytes: int = DEFAULT_UNIT_BYTES,
    scratch_dir=None,
    progress: bool = True,
    compute: bool = True,
):
    """Convert NIfTI runs (``.nii``/``.nii.gz``, paths or URLs) to lazyconn zarr stores.

    Streams with bounded memory whatever the run size: one sequential decompression
    pass that stages compressed per-chunk pieces in a local scratch file, then chunk
    assembly from them (see the module docstring and ``docs/format.md``). Many files run
    as one dask graph.

    Parameters
    ----------
    src : str, path or list of them
        NIfTI files (local paths or fsspec URLs).
    dst : str, path or list of them
        Store paths/URLs, one per ``src``.
    chunks : tuple of int, optional
        Stored chunk shape (x, y, z[, t]); default spatial blocks of about 32 MB with the
        whole time axis (``lazyconn.config.default_chunks``).
    overwrite : bool
        Replace existing stores. An *incomplete* lazyconn store (interrupted
        conversion) is always redone.
    dtype : None or float dtype
        None (default) stores the file's own values and its ``scl_slope``/``scl_inter``
        (lossless; reading applies the scaling exactly as nibabel). A float dtype stores
        scaled values in that dtype. An integer dtype is refused when the file has
        scaling (the integers would not be the image's values).
    compressor : "default", None, dict or zarr codec
        See ``LazyImage.to_zarr``.
    storage_options, dst_storage_options : dict, optional
        fsspec options for the sources, and for the destinations if they differ.
    unit_bytes : int
        Voxel bytes held by one work unit when a local ``.nii`` is read in place (several
        run in parallel); a staged run's units hold one chunk each.
    scratch_dir : str, optional
        Local directory for the staged (compressed) copy of a ``.nii.gz`` (default: the system
        temporary directory). On a multi-host cluster each file is converted by one
        worker, so a worker-local directory is right.
    progress : bool
        Show progress on stderr (tasks done, or runs done when a distributed client is
        active): a redrawn line on a terminal, plain lines otherwise.
    compute : bool
        If False, return the dask Delayed objects (one per file) instead of running.
        Nothing is deleted or written until they are computed (with ``overwrite``, the
        old store stays readable until then); a destination that would be refused is
        refused at once.

    Returns
    -------
    list of str or str
        The destination(s), as given.
    """
    single = not isinstance(src, (list, tuple))
    srcs = [src] if single else list(src)
    dsts = [dst] if not isinstance(dst, (list, tuple)) else list(dst)
    if len(srcs) != len(dsts):
        raise ParameterError(
            f"dst has {len(dsts)} entries but src has {len(srcs)}; expected one destination "
            "per source."
        )
    check_type("unit_bytes", unit_bytes, int, "an int (bytes)")
    if unit_bytes <= 0:
        raise ParameterError(f"unit_bytes={unit_bytes!r} is not valid; expected an int > 0.")
    if dst_storage_options is None:
        dst_storage_options = storage_options
    scratch_dir = os.fspath(scratch_dir) if scratch_dir is not None else tempfile.gettempdir()
    # One probe per destination folder: a missing bucket or denied access fails here, once,
    # before any store is created.
    probed = set()
    for d in dsts:
        d = check_url("dst", d)
        folder = d.rstrip("/").rsplit("/", 1)[0]
        if not is_local(d) and folder not in probed:
            check_writable("dst", d, dst_storage_options)
            probed.add(folder)
    sweep_stale_scratch(scratch_dir)  # stage files of killed conversions
    with terminate_cleanly():  # SIGTERM: scratch files removed, locks released, then exit
        return _convert(
            srcs,
            dsts,
            single,
            chunks,
            overwrite,
            dtype,
            compressor,
            storage_options,
            dst_storage_options,
            unit_bytes,
            scratch_dir,
            progress,
            compute,
        )


def _convert(
    srcs,
    dsts,
    single,
    chunks,
    overwrite,
    dtype,
    compressor,
    storage_options,
    dst_storage_options,
    unit_bytes,
    scratch_dir,
    progress,
    compute,
):
    jobs: list[_Job] = []
    try:
        for s, d in zip(srcs, dsts, strict=True):
            jobs.append(
                _make_job(
                    s,
                    d,
                    chunks,
                    overwrite,
                    dtype,
                    compressor,
                    storage_options,
                    dst_storage_options,
                    unit_bytes,
                    scratch_dir,
                )
            )
    except BaseException:
        _release(jobs)
        raise
    if not compute:  # the locks are released by each file's final task
        tasks = [_task(job) for job in jobs]
        return tasks[0] if single else tasks
    try:
        _run(jobs, progress)
    except BaseException:
        for job in jobs:  # the stores stay incomplete: load refuses them
            _remove_scratch(job)
        raise
    finally:
        _release(jobs)
        _BUFFERS.clear()
        _CHUNK_BUFFERS.clear()
        _STAGED_BUFFERS.clear()
    return dsts[0] if single else dsts


def _release(jobs) -> None:
    for job in jobs:
        if job.lock is not None:
            job.lock.release()


def _task(job: _Job):
    if _client() is not None:
        return dask.delayed(_convert_one, pure=False)(job)
    return _graph(job)


def _run(jobs, progress: bool) -> None:
    client = _client()
    tasks = [_task(job) for job in jobs]
    if client is not None:
        futures = client.compute(tasks)
        futures_progress("convert: runs", futures, enabled=progress)
        client.gather(futures)
        return
    with dask_progress("convert: tasks", enabled=progress):
        dask.compute(*tasks)


def _make_job(
    src,
    dst,
    chunks,
    overwrite,
    dtype,
    compressor,
    src_options,
    dst_options,
    unit_bytes,
    scratch_dir,
) -> _Job:
    dst = check_url("dst", dst)
    nifti = NiftiFile(src, src_options)
    slope, inter = nifti.slope, nifti.inter
    header_bytes, out_dtype = nifti.header_bytes, None
    if dtype is not None:
        dtype = np.dtype(dtype)
        scaled = (slope, inter) != (1.0, 0.0)
        if dtype.kind in "iub" and scaled:
            raise ParameterError(
                f"dtype={dtype.name!r} cannot hold the values of src={redact(src)!r}: it stores "
                f"{nifti.raw_dtype.name} with scl_slope={slope!r}, scl_inter={inter!r}; expected "
                "dtype=None (store the integers and their scaling, lossless) or a float dtype."
            )
        if dtype.kind not in "fiub":
            raise ParameterError(
                f"dtype={dtype.name!r} is not valid; expected None, a float or an integer dtype."
            )
        if dtype != nifti.raw_dtype or scaled:
            out_dtype = dtype
            header_bytes = header_bytes_with_dtype(nifti.header, dtype, len(nifti.header_bytes))
    if chunks is None:
        chunks = default_chunks(nifti.shape, out_dtype or nifti.raw_dtype)
    stored = check_chunks(chunks, nifti.shape)  # create_store's rule
    # Refuse now what would be refused, but delete and create nothing until the graph runs
    # (``compute=False`` hands the graph to the caller).
    lock = WriterLock(dst, dst_options)
    lock.check(overwrite)  # a second writer refuses now, before any work starts
    _prepare(dst, dst_options, overwrite, remove=False)
    job = _Job(
        nifti, dst, dst_options, header_bytes, out_dtype, stored, unit_bytes, scratch_dir, lock
    )
    job.create_args = (overwrite, compressor)
    return job


def _create_destination(job: _Job) -> None:
    """Replace the destination by a new, incomplete store: the first step of the graph."""
    overwrite, compressor = job.create_args
    job.lock.acquire(overwrite)  # held until _finish (or released when the run fails)
    try:
        _prepare(job.dst, job.dst_options, overwrite)
        create_store(
            job.dst,
            header_bytes=job.header_bytes,
            chunks=job.chunks4[: job.nifti.ndim],
            compressor=compressor,
            storage_options=job.dst_options,
            source=job.nifti.url,
            writer=job.lock.record,
            temporal_mean=True,
        )
    except BaseException:
        job.lock.release()
        raise


def _prepare(dst, dst_options, overwrite, remove=True):
    """An interrupted conversion (incomplete lazyconn store) is redone without asking.

    Removing runs with the writer lock held: an incomplete store is then not another live
    writer's (that one would hold the lock) but a dead one's.
    """
    if not overwrite and is_store(dst, dst_options, name="dst"):
        try:
            open_store(dst, dst_options, name="dst")
        except IncompleteStoreError:
            overwrite = True
        except InputFileError:
            pass  # not a lazyconn store: prepare_destination refuses it
    prepare_destination(dst, dst_options, overwrite, remove=remove)
