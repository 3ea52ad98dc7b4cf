"""The lazyconn Zarr v3 store: a NIfTI-Zarr image chunked for processing.

Layout (see ``docs/format.md``)::

    store/zarr.json        group; attributes "ome" (OME-Zarr 0.5 multiscales) and
                           "lazyconn" (format, affine, TR, scaling, ... and "complete")
    store/0/               the voxels as stored in the NIfTI (unscaled), axes (t, z, y, x),
                           chunks (T, cz, cy, cx): spatial blocks, whole time axis
    store/nifti/           uint8 array: the NIfTI header bytes (header + extensions)
    store/mean/            (converted runs) each voxel's temporal mean, axes (z, y, x),
                           chunks (cz, cy, cx); listed in the completion record

``lazyconn.complete`` is written ``false`` before any voxel and ``true`` after the
last chunk, so an interrupted write is never read as a finished store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import mmap
import os
import re
import sys
import uuid

import numpy as np
import zarr
import zarr.codecs
from zarr.abc.store import OffsetByteRequest
from zarr.core.buffer import cpu
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from lazyconn.config import default_chunks, mean_dtype
from lazyconn.exceptions import (
    ChecksumError,
    IncompleteStoreError,
    InputFileError,
    MissingChunkError,
    OutputExistsError,
    ParameterError,
)
from lazyconn.io._crc import crc32c
from lazyconn.io._fs import (
    access_errors,
    check_exists,
    check_url,
    exists,
    get_fs,
    is_local,
    local_path,
    redact,
)
from lazyconn.io.nifti import parse_header, scaled_dtype, slope_inter

FORMAT_NAME = "lazyconn-nifti-zarr"
FORMAT_VERSION = 1
DATA_PATH = "0"
HEADER_PATH = "nifti"
MEAN_PATH = "mean"

#: Default codec: Blosc LZ4 (level 5) behind a byte shuffle: ~4x faster than zstd both ways
#: for ~7% more bytes on noisy float32 BOLD data (measurements in docs/format.md).
DEFAULT_COMPRESSOR = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}


def make_compressor(compressor):
    """A zarr v3 codec from None (no compression), a dict of Blosc options or a codec."""
    if compressor == "default":
        compressor = DEFAULT_COMPRESSOR
    if compressor is None:
        return None
    if isinstance(compressor, dict):
        return zarr.codecs.BloscCodec(typesize=4, **compressor)
    return compressor


_CHUNK_KEY = re.compile(r"(^|/)c(/|$)")

#: A local chunk is read and its crc32c computed this many bytes at a time, each piece
#: while it is still in the CPU cache from the copy: crc32c runs at ~22 GB/s from cache
#: against ~10 GB/s from memory here, and a separate pass over a 20 MB chunk reads memory.
VERIFY_PIECE = 1 << 20


def checksum_error(shown: str, where) -> ChecksumError:
    """The error for a chunk whose bytes fail their crc32c (``where``: chunk indices in the
    stored axis order, (t,) z, y, x)."""
    if isinstance(where, tuple):
        what = f"chunk {where} ({', '.join(('t', 'z', 'y', 'x')[4 - len(where) :])} chunk indices)"
    else:
        what = f"chunk {where!r}"
    return ChecksumError(
        f"store {shown!r}: {what} fails its crc32c checksum (corrupted bytes); expected the "
        "bytes written at conversion: convert it again (overwrite=True)."
    )


#: Chunk files of at least this many bytes are mapped (mmap, pages populated at once)
#: rather than copied: the checksum and then the decompressor read the page cache itself,
#: which saves the copy a read makes (more than the checksum costs).
MAP_MIN = 1 << 20


def _mapped(handle, size: int):
    """The file's bytes as a read-only array over a mapping of it, or None (small file,
    no MAP_POPULATE on this system, mapping refused, or the file changed meanwhile)."""
    if size < max(MAP_MIN, 1) or not hasattr(mmap, "MAP_POPULATE"):
        return None
    try:
        mapping = mmap.mmap(
            handle.fileno(),
            size,
            flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
            prot=mmap.PROT_READ,
        )
    except (OSError, ValueError):
        return None
    if os.fstat(handle.fileno()).st_size != size:
        mapping.close()
        return None
    return np.frombuffer(mapping, dtype=np.uint8)  # keeps the mapping open while used


def _read_local(path, shown: str, where, verify: bool):
    """A local chunk file's bytes, mapped if large; with ``verify`` (crc32c last) its
    checksum verified as it is read (over the mapping, or piece by piece while each copied
    piece is in cache). None if the file does not exist, or if it is small and not to be
    verified (then read it as zarr does)."""
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        mapped = _mapped(handle, size)
        if mapped is not None:
            if verify and (
                size < 4 or crc32c(mapped[:-4]) != int.from_bytes(mapped[-4:], "little")
            ):
                raise checksum_error(shown, where)
            return mapped
        if not verify:
            return None
        buf = np.empty(size, dtype=np.uint8)
        view = memoryview(buf)
        crc, pos = 0, 0
        while pos < size:
            n = handle.readinto(view[pos : pos + VERIFY_PIECE])
            if not n:  # shrunk while read
                break
            end = min(pos + n, size - 4)
            if end > pos:
                crc = crc32c(buf[pos:end], crc)
            pos += n
    if pos != size or size < 4 or crc.to_bytes(4, "little") != buf[-4:].tobytes():
        raise checksum_error(shown, where)
    return buf


class _VerifiedBuffer(cpu.Buffer):
    """Chunk bytes whose crc32c the store checked as it read them."""


class StoreVerifiedCrc32c(zarr.codecs.Crc32cCodec):
    """zarr's crc32c codec that does not check again bytes the store already verified.

    Bytes from anywhere else (a remote store, another wrapper) are verified as zarr does.
    Same name and metadata ("crc32c"): only how a read checks differs.
    """

    def _decode_sync(self, chunk_bytes, chunk_spec):
        if isinstance(chunk_bytes, _VerifiedBuffer):
            return chunk_spec.prototype.buffer.from_array_like(chunk_bytes.as_numpy_array()[:-4])
        return super()._decode_sync(chunk_bytes, chunk_spec)


def decodes_in_place(array) -> bool:
    """True if whole chunks of ``array`` (read through :func:`_verified_reads`) can be
    decoded straight into their output by :func:`read_chunk`: a local store whose chunk
    files it verifies itself, C order, and codecs bytes (native byte order) -> optional
    Blosc -> crc32c. Anything else is read by zarr."""
    codecs = array.metadata.codecs
    store = array.store_path.store
    if not (
        isinstance(store, CompleteStore)
        and isinstance(store._store, LocalStore)
        and f"{array.path}/" in store.verify
        and array._async_array.config.order == "C"
        and len(codecs) in (2, 3)
        and type(codecs[-1]) is StoreVerifiedCrc32c
        and type(codecs[0]) is zarr.codecs.BytesCodec
        and (len(codecs) == 2 or type(codecs[1]) is zarr.codecs.BloscCodec)
    ):
        return False
    endian = codecs[0].endian
    dtype = np.dtype(array.dtype)
    return dtype.isnative and (endian is None or endian.value == sys.byteorder)


def _verified_chunk_bytes(array, coords):
    """The bytes of chunk ``coords`` of ``array`` (:func:`decodes_in_place`) as the store
    read and verified them, without their crc32c (the last 4 bytes), or None if the store
    did not read it itself (absent chunk: zarr's read then gives the fill value or the
    store's MissingChunkError)."""
    from zarr.core.buffer import default_buffer_prototype

    key = array.metadata.encode_chunk_key(coords)
    path = f"{array.path}/{key}" if array.path else key
    raw = array.store_path.store.local_chunk(path, default_buffer_prototype())
    if not isinstance(raw, _VerifiedBuffer):
        return None
    return raw.as_numpy_array()[:-4]


def _is_blosc_frame(src, nbytes: int, itemsize: int | None = None) -> bool:
    """Whether ``src`` is a whole Blosc frame of ``nbytes`` decompressed (its 16-byte
    header: sizes decompressed at bytes 4-7 and compressed at 12-15, the item size at 3),
    of items of ``itemsize`` bytes if given."""
    return (
        src.size >= 16
        and int.from_bytes(src[4:8], "little") == nbytes
        and int.from_bytes(src[12:16], "little") == src.size
        and (itemsize is None or src[3] == itemsize)
    )


def read_chunk(array, coords: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray | None:
    """Chunk ``coords`` of ``array`` (:func:`decodes_in_place`), its first ``shape``
    elements along each axis (smaller at the array's edges), decoded into the one
    buffer returned. None if the chunk is absent (then zarr reads it: a fill value, or
    the store's MissingChunkError) or its bytes are not a Blosc frame of the chunk's size.

    zarr decodes a chunk into a new buffer and then copies the selection into its output:
    two chunk-sized buffers at once. Here Blosc decompresses into the output itself and an
    edge chunk's selection is compacted in place, so a chunk read holds one decoded copy
    (plus the compressed bytes, verified by the store as it read them).
    """
    src = _verified_chunk_bytes(array, coords)
    if src is None:
        return None
    dtype = np.dtype(array.dtype)
    full = tuple(array.metadata.chunks)
    nbytes = int(np.prod(full)) * dtype.itemsize
    buf = np.empty(nbytes, dtype=np.uint8)
    if len(array.metadata.codecs) == 2:  # no compressor: the bytes are the chunk
        if src.size != nbytes:
            return None
        buf[:] = src
    else:
        import numcodecs.blosc

        if not _is_blosc_frame(src, nbytes):
            return None
        numcodecs.blosc.decompress(src, buf)
    del src
    chunk = buf.view(dtype).reshape(full)
    shape = tuple(int(n) for n in shape)
    if shape == full:
        return chunk
    # An edge chunk: move its selection to the front of the buffer, in C order. Slice a
    # of the output ends where slice a+1 of the chunk starts, so copying slice by slice
    # never overwrites data still to be moved (numpy buffers a slice that overlaps itself).
    out = buf[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
    inner = tuple(slice(0, n) for n in shape[1:])
    for a in range(shape[0]):
        out[a] = chunk[(a, *inner)]
    return out


def _blosc_getitem():
    """c-blosc's ``blosc_getitem`` (decode items ``[start, start + n)`` of a Blosc frame,
    only the blocks holding them) from the c-blosc that numcodecs builds in, or None.

    numcodecs' Python API has no partial decode; its extension exports c-blosc's symbols.
    A ctypes call releases the GIL, and ``blosc_getitem`` keeps no global state.
    """
    if not _GETITEM:
        import ctypes

        import numcodecs.blosc

        try:
            func = ctypes.CDLL(numcodecs.blosc.__file__).blosc_getitem
        except (OSError, AttributeError):
            func = None
        else:
            func.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
            func.restype = ctypes.c_int
        _GETITEM.append(func)
    return _GETITEM[0]


_GETITEM: list = []

#: Bytes of a chunk decoded at a time by :func:`chunk_frames` (whole Blosc blocks).
FRAMES_BYTES = 2 << 20


def chunk_frames(array, coords: tuple[int, ...], shape: tuple[int, ...]):
    """Chunk ``coords`` of a (t, ...) ``array`` (:func:`decodes_in_place`) as successive
    pieces of whole time frames: 2-D ``(n_frames, voxels)`` arrays (voxels in the chunk's
    C order, cut to ``shape`` at the array's edges) over one reused buffer, each valid until
    the next is asked for. None where :func:`read_chunk` would not decode the chunk itself
    (absent chunk, no Blosc frame of the chunk's size, no ``blosc_getitem``).

    A time-slowest chunk holds its frames one after another, so a reader that needs one
    frame at a time (a linear reduction over voxels) holds ~:data:`FRAMES_BYTES` of it
    instead of the whole decoded chunk (24 MB for a seed chunk).
    """
    src = _blosc_frame(array, coords)
    if src is None:
        return None
    dtype, full = np.dtype(array.dtype), tuple(array.metadata.chunks)
    return _frames(src, dtype, full, tuple(int(n) for n in shape))


def _blosc_frame(array, coords):
    """The verified Blosc frame of chunk ``coords`` of ``array`` (:func:`decodes_in_place`)
    if ``blosc_getitem`` can decode it in parts (items of the dtype's size), else None."""
    if _blosc_getitem() is None or len(array.metadata.codecs) != 3:
        return None
    src = _verified_chunk_bytes(array, coords)
    itemsize = np.dtype(array.dtype).itemsize
    nbytes = int(np.prod(array.metadata.chunks)) * itemsize
    return src if src is not None and _is_blosc_frame(src, nbytes, itemsize) else None


def _decode_items(src, start: int, out) -> None:
    """Items ``[start, start + out.size)`` of the verified Blosc frame ``src`` decoded into
    ``out`` (c-blosc's ``blosc_getitem``)."""
    if _blosc_getitem()(src.ctypes.data, start, out.size, out.ctypes.data) != out.nbytes:
        raise ValueError("blosc_getitem failed on a verified chunk")


class ChunkSlabs:
    """Part of a chunk of a 4-D store (stored t, z, y, x; :func:`decodes_in_place`, Blosc)
    seen as an (x, y, z, t) block, decoded a slab of volumes at a time: ``block[...,
    t0:t1]`` decodes only those frames (contiguous: time is the chunk's slowest axis) with
    ``blosc_getitem`` into one buffer reused slab after slab, and returns them cut to the
    part, as an (x, y, z, t1 - t0) view valid until the next slab. What
    :func:`lazyconn.ops.spatial.gaussian_spread_block` reads a streamed block through
    (:class:`lazyconn.ops.voxels.VoxelStream`): a seed chunk (24 MB decoded) then costs its
    compressed bytes and a slab (~2 MiB). Unlike :func:`chunk_frames`' pieces (whole Blosc
    blocks), a slab's first and last Blosc blocks may be decoded twice; exact slabs need no
    copy into the reader's own slab buffer (measured: the seeds' reductions stage peaked
    ~30 MiB lower than through :func:`chunk_frames` and a slab buffer).

    Parameters
    ----------
    src : numpy.ndarray
        The chunk's verified Blosc frame (:func:`_blosc_frame`).
    full : tuple of 4 int
        The chunk's stored shape (t, z, y, x).
    n_frames : int
        The chunk's frames inside the array.
    select : tuple of 3 slice
        The part, (x, y, z) slices of the chunk (steps of 1).
    dtype : numpy dtype
    """

    def __init__(self, src, full, n_frames, select, dtype):
        self._src, self._full, self.dtype = src, tuple(full), np.dtype(dtype)
        self._select = tuple(select)[::-1]  # (z, y, x)
        self.shape = (*(s.stop - s.start for s in select), int(n_frames))
        self.ndim = 4
        self._buf = np.empty(0, dtype=self.dtype)

    def __getitem__(self, key):
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and key[0] is Ellipsis
            and isinstance(key[1], slice)
            and key[1].step in (None, 1)
        ):
            raise IndexError(f"ChunkSlabs takes [..., t0:t1] only; got {key!r}.")
        t0, t1, _ = key[1].indices(self.shape[3])
        t1 = max(t0, t1)
        frame = int(np.prod(self._full[1:]))
        n = (t1 - t0) * frame
        if self._buf.size < n:
            self._buf = np.empty(n, dtype=self.dtype)
        out = self._buf[:n]
        if n:
            _decode_items(self._src, t0 * frame, out)
        slab = out.reshape(t1 - t0, *self._full[1:])[(slice(None), *self._select)]
        return slab.transpose(3, 2, 1, 0)


def chunk_slabs(array, coords: tuple[int, ...], shape: tuple[int, ...], select):
    """Chunk ``coords`` of a 4-D (t, z, y, x) ``array``, ``shape`` of it inside the array,
    as a :class:`ChunkSlabs` of its part ``select`` ((x, y, z) slices), or None where
    :func:`chunk_frames` would be None.

    Parameters
    ----------
    array : zarr.Array
    coords : tuple of 4 int
    shape : tuple of 4 int
    select : tuple of 3 slice
    """
    src = _blosc_frame(array, coords)
    if src is None:
        return None
    return ChunkSlabs(src, tuple(array.metadata.chunks), int(shape[0]), select, array.dtype)


def _frames(src, dtype, full, shape):
    frame = int(np.prod(full[1:]))  # items per stored frame
    block = max(int.from_bytes(src[8:12], "little") // dtype.itemsize, 1)
    piece = max(FRAMES_BYTES // dtype.itemsize // block, 1) * block
    total = shape[0] * frame  # the chunk's frames inside the array
    # whole blocks decoded at a time (a block decoded twice costs as much as a whole one);
    # the last partial frame of a piece moves to the front for the next
    buf = np.empty(piece + frame, dtype=dtype)
    edge = tuple(slice(0, n) for n in shape[1:])
    have, pos = 0, 0
    while pos < total:
        n = min(piece, total - pos)
        _decode_items(src, pos, buf[have : have + n])
        have, pos = have + n, pos + n
        done = have // frame
        if done:
            frames = buf[: done * frame].reshape(done, *full[1:])
            if shape[1:] != full[1:]:
                frames = frames[(slice(None), *edge)]
            yield np.ascontiguousarray(frames).reshape(done, -1)
        rest = have - done * frame
        buf[:rest] = buf[done * frame : have]
        have = rest


#: :meth:`CompleteStore.local_chunk`'s answer for a key it leaves to zarr's own read.
NOT_LOCAL = object()


class CompleteStore(WrapperStore):
    """A zarr store where a missing chunk is an error naming the store and the chunk.

    zarr reads an absent chunk as the fill value (zeros); for a store whose completion
    record says every chunk was written, an absent chunk means lost data. While ``strict``
    (set once the completion record is read), ``get`` of a missing chunk key under
    ``prefix`` (one array's path or a tuple of them) raises
    :class:`~lazyconn.exceptions.MissingChunkError`. In a local store, chunk files of
    ``MAP_MIN`` bytes or more are mapped rather than copied; for the arrays in ``verify``
    (their paths with a trailing "/", their chunks ending in a crc32c) each chunk's
    checksum is computed as it is read (over the mapping, or in cache-sized pieces of a
    smaller file) and a mismatch raises :class:`~lazyconn.exceptions.ChecksumError`; read
    those arrays through :class:`StoreVerifiedCrc32c` (:func:`_verified_reads`) so that
    zarr does not check them a second time.
    """

    def __init__(
        self,
        store,
        shown: str,
        *,
        prefix: str | tuple = "",
        strict: bool = True,
        verify: frozenset = frozenset(),
    ):
        super().__init__(store)
        self.shown = shown
        self.prefix = prefix
        self.strict = strict
        self.verify = verify

    def _with_store(self, store):
        return type(self)(
            store, self.shown, prefix=self.prefix, strict=self.strict, verify=self.verify
        )

    def _chunk_of(self, key: str):
        """(array prefix, chunk indices) if ``key`` names a chunk of an array, else None."""
        prefixes = (self.prefix,) if isinstance(self.prefix, str) else self.prefix
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            return None
        relative = key[len(prefix) :]
        if not _CHUNK_KEY.search(relative) or relative.endswith("zarr.json"):
            return None
        try:
            return prefix, tuple(int(i) for i in relative.split("/")[1:])
        except ValueError:
            return prefix, relative

    def local_chunk(self, key, prototype):
        """:meth:`get` of a whole chunk of a local store, in the calling thread: its bytes
        (a :class:`_VerifiedBuffer` for the arrays in ``verify``), :meth:`_missing` for a
        verified array's absent chunk, or :data:`NOT_LOCAL` (not a local chunk, or one to
        read as zarr does).

        :func:`read_chunk` calls it directly: zarr's ``sync`` of :meth:`get` hands each
        read to zarr's one event loop thread and from there to a worker thread, two
        thread switches per chunk for every thread reading."""
        chunk = self._chunk_of(key)
        if (
            chunk is None
            or not isinstance(self._store, LocalStore)
            or not issubclass(prototype.buffer, cpu.Buffer)
        ):
            return NOT_LOCAL
        verify = chunk[0] in self.verify
        data = _read_local(self._store.root / key, self.shown, chunk[1], verify)
        if data is not None:
            return _VerifiedBuffer(data) if verify else prototype.buffer(data)
        return self._missing(key) if verify else NOT_LOCAL

    async def get(self, key, prototype, byte_range=None):
        chunk = self._chunk_of(key)
        value = None
        if chunk is not None and isinstance(self._store, LocalStore) and byte_range is None:
            value = await asyncio.to_thread(self.local_chunk, key, prototype)
            if value is not NOT_LOCAL:
                return value
            value = None
        if value is None:
            if byte_range is None and isinstance(self._store, FsspecStore):
                # a read from byte 0: one GET (s3fs's whole-object read HEADs for the size)
                byte_range = OffsetByteRequest(0)
            value = await self._store.get(key, prototype, byte_range)
        if value is None and chunk is not None:
            return self._missing(key)
        return value

    def _missing(self, key: str):
        """None (zarr's fill value) unless ``strict``: then a MissingChunkError."""
        if self.strict:
            raise MissingChunkError(
                f"store {self.shown!r} is marked complete but its chunk {key!r} is missing "
                "(deleted or lost); expected every chunk it records: write or convert it "
                "again (overwrite=True)."
            )
        return None


def _zarr_store(url: str, storage_options: dict | None, *, read_only: bool):
    if is_local(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=storage_options or {}, read_only=read_only
    )


def is_store(url: str, storage_options: dict | None = None, *, name: str = "src") -> bool:
    """True if ``url`` holds a Zarr group (has a root ``zarr.json``)."""
    fs, path = get_fs(url, storage_options)
    with access_errors(name, url):
        return exists(fs, path.rstrip("/") + "/zarr.json")


def _ome_attrs(shape_xyzt, affine, t_r, name: str) -> dict:
    """OME-Zarr 0.5 multiscales for one level, axes (t,) z, y, x, as nifti-zarr writes them."""
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    axes = [
        {"name": "z", "type": "space", "unit": "millimeter"},
        {"name": "y", "type": "space", "unit": "millimeter"},
        {"name": "x", "type": "space", "unit": "millimeter"},
    ]
    scale = [float(zooms[2]), float(zooms[1]), float(zooms[0])]
    if len(shape_xyzt) == 4:
        axes.insert(0, {"name": "t", "type": "time", "unit": "second"})
        scale.insert(0, float(t_r or 1.0))
    multiscale = {
        "name": name,
        "axes": axes,
        "datasets": [
            {
                "path": DATA_PATH,
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": [0.0] * len(scale)},
                ],
            }
        ],
    }
    return {"version": "0.5", "multiscales": [multiscale]}


def _remove_tree(fs, path: str, attempts: int = 5) -> None:
    """Remove a store; retry while straggling writers of a failed run still add files."""
    import time

    for attempt in range(attempts):
        try:
            fs.rm(path, recursive=True)
            return
        except OSError:
            if attempt == attempts - 1 or not fs.exists(path):
                if not fs.exists(path):
                    return
                raise
            time.sleep(0.2 * (attempt + 1))


def prepare_destination(
    dst: str,
    storage_options: dict | None,
    overwrite: bool,
    *,
    name: str = "dst",
    remove: bool = True,
) -> None:
    """Refuse an existing destination unless ``overwrite``; then remove it; check writability.

    With ``remove=False`` only the checks run (nothing is deleted): for graphs that write
    later, which must fail early but delete nothing before they are computed.
    """
    fs, path = get_fs(dst, storage_options)
    with access_errors(name, dst):
        exists = fs.exists(path)
    if exists:
        if not overwrite:
            raise OutputExistsError(
                f"{name}={redact(dst)!r} already exists; expected a new path, or pass "
                "overwrite=True to replace it."
            )
        if fs.isdir(path) and fs.ls(path) and not is_store(dst, storage_options, name=name):
            raise OutputExistsError(
                f"{name}={redact(dst)!r} is a non-empty directory that is not a zarr store; "
                "refusing to delete it even with overwrite=True."
            )
        if remove:
            _remove_tree(fs, path)
    if is_local(dst):
        import os

        parent = os.path.dirname(os.path.abspath(local_path(dst)))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            from lazyconn.exceptions import OutputNotWritableError

            if os.path.isdir(parent):
                reason = "is not writable"
            elif os.path.exists(parent):
                reason = "is a file, not a directory"
            else:
                reason = "does not exist"
            raise OutputNotWritableError(
                f"{name}={redact(dst)!r} cannot be written: its directory {parent!r} {reason}; "
                "expected a destination in a writable directory."
            )


def check_chunks(chunks, shape) -> tuple[int, ...]:
    """Stored chunks: (x, y, z) blocks, and always the whole time axis of a 4-D image."""
    given = chunks
    try:
        chunks = tuple(int(c) for c in chunks)
    except (TypeError, ValueError):
        chunks = ()
    if len(chunks) == 3 and len(shape) == 4:
        chunks += (int(shape[3]),)
    if (
        len(chunks) != len(shape)
        or any(c < 1 for c in chunks)
        or (len(shape) == 4 and chunks[3] < shape[3])
    ):
        raise ParameterError(
            f"chunks={given!r} is not valid for shape {tuple(shape)}; expected positive "
            "integers (x, y, z), optionally followed by the whole time axis "
            f"({shape[3] if len(shape) == 4 else 'none for 3-D'}): a stored chunk never splits time."
        )
    return tuple(min(c, int(s)) for c, s in zip(chunks, shape, strict=True))


def create_store(
    dst: str,
    *,
    header_bytes: bytes,
    chunks=None,
    compressor="default",
    storage_options: dict | None = None,
    source: str | None = None,
    name: str = "dst",
    writer: dict | None = None,
    temporal_mean: bool = False,
):
    """Write the metadata of a new (incomplete) store and return its voxel zarr array.

    ``writer`` (host, pid, start, token of the process holding the writer lock) is kept in
    ``lazyconn.writer``: who writes an in-progress store, and who may mark it complete.
    ``temporal_mean`` (4-D only) also creates the ``mean`` array (each voxel's mean over
    time, of the scaled values, in :func:`~lazyconn.config.mean_dtype`), chunked as the
    voxels' spatial blocks, for the writer to fill chunk by chunk (``convert`` does).

    The array holds the NIfTI's unscaled voxels (native byte order), axes reversed to
    OME-Zarr's (t, z, y, x). Call :func:`mark_complete` after the last chunk.
    """
    header = parse_header(header_bytes, "header", "header")
    shape = tuple(int(s) for s in header.get_data_shape())
    raw_dtype = header.get_data_dtype().newbyteorder("=")
    slope, inter = slope_inter(header)
    if chunks is None:
        chunks = default_chunks(shape, raw_dtype)
    chunks = check_chunks(chunks, shape)
    affine = header.get_best_affine()
    t_r = None
    if len(shape) == 4:
        t_unit = header.get_xyzt_units()[1]
        t_r = float(header.get_zooms()[3]) * {"msec": 1e-3, "usec": 1e-6}.get(t_unit, 1.0)
    attrs = {
        "ome": _ome_attrs(shape, affine, t_r, (source or "").rsplit("/", 1)[-1]),
        "lazyconn": {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "complete": False,
            "uuid": uuid.uuid4().hex,
            "shape": list(shape),
            "axes_stored": ["t", "z", "y", "x"][4 - len(shape) :],
            "chunks": list(chunks),
            "dtype": raw_dtype.str,
            "scaled_dtype": scaled_dtype(raw_dtype, slope, inter).str,
            "scl_slope": float(slope),
            "scl_inter": float(inter),
            "affine": np.asarray(affine, dtype=float).tolist(),
            "t_r": t_r,
            "xyzt_units": list(header.get_xyzt_units()),
            "source": redact(source) if source else None,
            "writer": writer,
        },
    }
    codec = make_compressor(compressor)
    # crc32c last: every chunk carries a checksum zarr verifies on read.
    codecs = [*([codec] if codec is not None else []), zarr.codecs.Crc32cCodec()]
    try:
        store = _zarr_store(dst, storage_options, read_only=False)
        group = zarr.create_group(store, attributes=attrs, overwrite=True)
        raw = np.frombuffer(header_bytes, dtype=np.uint8)
        hdr_array = group.create_array(
            HEADER_PATH, shape=raw.shape, dtype=np.uint8, chunks=raw.shape, compressors=None
        )
        hdr_array[...] = raw
        if temporal_mean and len(shape) == 4:
            group.create_array(
                MEAN_PATH,
                shape=shape[2::-1],
                dtype=mean_dtype(scaled_dtype(raw_dtype, slope, inter)),
                chunks=chunks[2::-1],
                compressors=codecs,
                fill_value=0,
                dimension_names=["z", "y", "x"],
                config={"write_empty_chunks": True},
            )
    except OSError as exc:
        from lazyconn.exceptions import OutputNotWritableError

        raise OutputNotWritableError(
            f"{name}={redact(dst)!r} cannot be written ({type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or 'write failed'}); expected a writable "
            "destination."
        ) from None
    return group.create_array(
        DATA_PATH,
        shape=shape[::-1],
        dtype=raw_dtype,
        chunks=chunks[::-1],
        compressors=codecs,
        fill_value=0,
        dimension_names=["t", "z", "y", "x"][4 - len(shape) :],
        # Every chunk is written: no per-chunk "all fill value?" scan, and a complete store
        # has all its chunk files.
        config={"write_empty_chunks": True},
    )


def mark_complete(
    dst: str, storage_options: dict | None = None, *, writer: str | None = None
) -> None:
    """Check every chunk was written, then record it: the last write of a conversion.

    The completion record holds the number of chunks written and the checksum codec
    ("crc32c": zarr verifies each chunk on read), so a store marked complete is complete;
    a store with a temporal ``mean`` array lists it (``temporal_mean``) once its chunks are
    all there too.
    """
    group = zarr.open_group(_zarr_store(dst, storage_options, read_only=False), mode="r+")
    owner = (group.attrs["lazyconn"].get("writer") or {}) if writer is not None else {}
    if writer is not None and owner.get("token") != writer:
        from lazyconn.exceptions import StoreLockedError

        raise StoreLockedError(
            f"dst={redact(dst)!r} was replaced by another writer while this one wrote it "
            f"(now host {owner.get('host')!r}, pid {owner.get('pid')}); expected a single "
            "writer: its completion is left to that writer."
        )
    array = group[DATA_PATH]
    fs, path = get_fs(dst, storage_options)
    has_mean = MEAN_PATH in group.array_keys()
    for name in (DATA_PATH, MEAN_PATH) if has_mean else (DATA_PATH,):
        expected = int(np.prod(group[name].cdata_shape))
        found = len(fs.find(path.rstrip("/") + f"/{name}/c"))
        if name == DATA_PATH:
            written = found
        if found != expected:
            raise IncompleteStoreError(
                f"dst={redact(dst)!r} holds {found} chunk files of {name!r} after writing; "
                f"expected {expected}: it stays incomplete (convert or write it again)."
            )
    meta = dict(group.attrs["lazyconn"])
    if has_mean:
        meta["temporal_mean"] = MEAN_PATH
    codecs = [type(c).__name__ for c in array.metadata.codecs]
    meta.update(
        {
            "complete": True,
            "chunks_written": written,
            "checksum": "crc32c" if "Crc32cCodec" in codecs else None,
        }
    )
    group.attrs["lazyconn"] = meta


def _verified_reads(array):
    """``array`` read with each chunk's crc32c checked as its local file is read (once)."""
    codecs = array.metadata.codecs
    store = array.store_path.store
    if not (
        isinstance(store, CompleteStore)
        and isinstance(store._store, LocalStore)
        and codecs
        and type(codecs[-1]) is zarr.codecs.Crc32cCodec
    ):
        return array  # remote or no checksum: zarr's own path
    from zarr.core.array import Array, AsyncArray

    store.verify = store.verify | {f"{array.path}/"}
    metadata = dataclasses.replace(array.metadata, codecs=(*codecs[:-1], StoreVerifiedCrc32c()))
    return Array(
        AsyncArray(
            metadata=metadata, store_path=array.store_path, config=array._async_array.config
        )
    )


class StoreInfo:
    """What :func:`open_store` found: the voxel array, header and scaling, and the stored
    temporal mean (a zarr array, or None when the completion record lists none)."""

    def __init__(self, array, header, header_bytes, meta, url, mean=None):
        self.array = array
        self.mean = mean
        self.header = header
        self.header_bytes = header_bytes
        self.meta = meta
        self.url = url
        self.shape = tuple(int(s) for s in header.get_data_shape())
        self.slope, self.inter = slope_inter(header)
        self.raw_dtype = np.dtype(array.dtype)
        self.dtype = scaled_dtype(self.raw_dtype, self.slope, self.inter)
        if meta and "affine" in meta:
            self.affine = np.asarray(meta["affine"], dtype=np.float64)
        else:
            self.affine = header.get_best_affine()


def open_store(url, storage_options: dict | None = None, *, name: str = "src") -> StoreInfo:
    """Open a lazyconn (or plain NIfTI-Zarr) store; refuse one without its completion marker."""
    url = check_url(name, url)
    check_exists(name, url, storage_options, expected="a lazyconn zarr store")
    shown = redact(url)
    store = CompleteStore(
        _zarr_store(url, storage_options, read_only=True),
        shown,
        prefix=(f"{DATA_PATH}/", f"{MEAN_PATH}/"),
        strict=False,
    )
    try:
        try:  # lazyconn's stores are Zarr v3: no probing for v2 metadata (3 GETs on S3)
            group = zarr.open_group(store, mode="r", zarr_format=3)
        except Exception:
            group = zarr.open_group(store, mode="r")
    except Exception as exc:
        raise InputFileError(
            f"{name}={shown!r} is not a zarr group ({type(exc).__name__}); expected a lazyconn "
            "zarr store."
        ) from None
    attrs = group.attrs.asdict()
    meta = attrs.get("lazyconn")
    if meta is not None:
        if meta.get("format") != FORMAT_NAME or meta.get("format_version", 0) > FORMAT_VERSION:
            raise InputFileError(
                f"{name}={shown!r} has format {meta.get('format')!r} version "
                f"{meta.get('format_version')!r}; expected {FORMAT_NAME!r} version "
                f"<= {FORMAT_VERSION}."
            )
        if meta.get("complete") is not True:
            raise IncompleteStoreError(
                f"{name}={shown!r} is an incomplete lazyconn store (its completion marker "
                "'lazyconn.complete' is not set: an interrupted conversion?); expected a "
                "complete store: convert it again with overwrite=True."
            )
    elif not ("ome" in attrs or "multiscales" in attrs):
        raise InputFileError(
            f"{name}={shown!r} is a zarr group without lazyconn or NIfTI-Zarr metadata; "
            "expected a lazyconn zarr store."
        )
    # lazyconn writes every chunk (write_empty_chunks): a missing one is lost data.
    store.strict = meta is not None
    try:
        header_bytes = np.asarray(group[HEADER_PATH][...]).tobytes()
        array = group[DATA_PATH]
    except KeyError as exc:
        raise InputFileError(
            f"{name}={shown!r} lacks its {exc.args[0]!r} array; expected a NIfTI-Zarr store with "
            f"'{DATA_PATH}' (voxels) and '{HEADER_PATH}' (header bytes)."
        ) from None
    array = _verified_reads(array)
    header = parse_header(header_bytes, name, url)
    if tuple(array.shape[::-1]) != tuple(header.get_data_shape()):
        raise InputFileError(
            f"{name}={shown!r} has voxel array shape {array.shape} (t,z,y,x) but header shape "
            f"{header.get_data_shape()}; expected the reverse of the header shape."
        )
    mean = None
    if meta is not None and meta.get("temporal_mean") == MEAN_PATH:
        mean = _verified_reads(group[MEAN_PATH])
    return StoreInfo(array, header, header_bytes, meta, url, mean)


__all__ = [
    "DEFAULT_COMPRESSOR",
    "create_store",
    "is_store",
    "mark_complete",
    "open_store",
    "prepare_destination",
]
