"""NIfTI files behind a picklable handle: header read eagerly, voxels read per chunk.

``.nii`` files allow random access, so a chunk reads only its bytes (nibabel's
``fileslice``). A ``.nii.gz`` can only be decompressed from its start; chunks are
then time slabs (the on-disk order), and each process keeps, per file, the live
decompressor where the last read stopped (reading slab after slab inflates the file
once, with ISA-L: ``isal`` is a dependency) and snapshots of the zlib state every few tens of MB
(for reads out of order).
"""

from __future__ import annotations

import io
import threading
import zlib
from collections import OrderedDict

import nibabel as nib
import numpy as np
from nibabel.fileslice import fileslice
from nibabel.volumeutils import apply_read_scaling

from lazyconn.exceptions import DimensionError, InputFileError
from lazyconn.io import _fs
from lazyconn.io._fs import StorageOptions, check_exists, check_url, redact

# ISA-L inflates ~4x faster than zlib (a 2 mm fMRI run). A runtime dependency, but a build of
# it may be missing (a platform without wheels): then zlib, same values (tested).
try:
    from isal import isal_zlib as fast_zlib

    INFLATE_ERRORS: tuple = (zlib.error, fast_zlib.error)
except ImportError:  # pragma: no cover - depends on the environment
    fast_zlib = zlib
    INFLATE_ERRORS = (zlib.error,)

GZIP_MAGIC = b"\x1f\x8b"
#: Uncompressed bytes between two saved decompressor states of a .nii.gz.
CHECKPOINT_EVERY = 32 * 2**20
#: Compressed bytes read per request (small: one inflate call's output then fits in
#: ``INFLATE_STEP``, so the inflater copies no unconsumed input tail).
READ_BLOCK = 256 * 2**10
#: Bound on the output of one zlib call (keeps memory flat on very compressible data).
INFLATE_STEP = 4 * 2**20
_MAX_INDEXED_FILES = 16  # snapshots ~40 KB each, one per slab


def scale(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Apply NIfTI scaling exactly as nibabel's ``ArrayProxy`` does (same values, same dtype)."""
    scl_slope = np.asanyarray(slope)
    scl_inter = np.asanyarray(inter)
    if np.can_cast(scl_inter, scl_slope.dtype):
        scl_inter = scl_inter.astype(scl_slope.dtype)
    return apply_read_scaling(raw, scl_slope, scl_inter)


def scaled_dtype(raw_dtype, slope: float, inter: float) -> np.dtype:
    """dtype nibabel gives for scaled data (it depends on dtypes and scale values only)."""
    return scale(np.zeros(1, dtype=raw_dtype), slope, inter).dtype


def slope_inter(header) -> tuple[float, float]:
    """(slope, inter) as nibabel's ArrayProxy stores them (1.0, 0.0 when unset)."""
    slope, inter = header.get_slope_inter()
    return (1.0 if slope is None else slope), (0.0 if inter is None else inter)


def header_bytes_with_dtype(header, dtype, nbytes: int) -> bytes:
    """Header bytes (``nbytes`` long, extensions kept) for unscaled voxels of ``dtype``."""
    header = header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(None, None)
    buf = io.BytesIO()
    header.write_to(buf)
    return buf.getvalue().ljust(nbytes, b"\0")[:nbytes]


def check_ndim(name: str, url: str, shape) -> None:
    if len(shape) not in (3, 4):
        raise DimensionError(
            f"{name}={redact(url)!r} has shape {tuple(shape)} ({len(shape)}-D); "
            "expected a 3-D or 4-D image."
        )


def parse_header(raw: bytes, name: str, url: str):
    """A nibabel header from the bytes at the start of a NIfTI-1/2 file."""
    shown = redact(url)
    if len(raw) < 348:
        raise InputFileError(
            f"{name}={shown!r} is not a NIfTI file: it has {len(raw)} bytes, fewer than a "
            "NIfTI header (348); expected a .nii or .nii.gz image."
        )
    sizeof = {int.from_bytes(raw[:4], order) for order in ("little", "big")}
    if 348 in sizeof:
        klass = nib.Nifti1Header
    elif 540 in sizeof:
        klass = nib.Nifti2Header
    else:
        raise InputFileError(
            f"{name}={shown!r} is not a NIfTI file (sizeof_hdr bytes {raw[:4]!r}); "
            "expected a .nii or .nii.gz image."
        )
    try:
        header = klass.from_fileobj(io.BytesIO(raw), check=True)
    except Exception as exc:  # nibabel raises HeaderDataError, ValueError...
        raise InputFileError(
            f"{name}={shown!r} has an invalid NIfTI header ({exc}); expected a .nii or .nii.gz "
            "image."
        ) from None
    if header["magic"].item() not in (b"n+1", b"n+2"):
        raise InputFileError(
            f"{name}={shown!r} has magic {header['magic'].item()!r}; expected a single-file "
            "NIfTI ('n+1' or 'n+2'), not a .hdr/.img pair."
        )
    return header


class _Cursor:
    """A live decompressor stopped at uncompressed offset ``upos``.

    ``cpos`` is the compressed offset of the next byte to read, ``pending`` the compressed
    bytes read but not inflated yet, ``state`` None between two gzip members, ``engine`` the
    module whose ``decompressobj`` made it (``zlib``, or ISA-L's ``isal_zlib``).
    """

    __slots__ = ("cpos", "engine", "pending", "state", "upos")

    def __init__(self, upos, cpos, state, pending, engine):
        self.upos, self.cpos, self.state, self.pending, self.engine = (
            upos,
            cpos,
            state,
            pending,
            engine,
        )


class _GzipIndex:
    """Where reads of one file can resume: the last read's live decompressor, and saved
    zlib states (snapshots) at the points where reads begin (each time slab's first byte)
    passed by zlib passes.

    ``lock`` is held for a whole read: a gzip stream inflates in order only, so a second
    thread reading the same file waits and then resumes where the first stopped, instead of
    inflating the same bytes again beside it.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.points: list[tuple[int, int, object]] = []
        self.cursor: _Cursor | None = None

    def resume(self, start: int, first_read_end: int) -> _Cursor:
        """Where a read from ``start`` begins: the nearest of the last read's end and the
        snapshots at or before ``start``, else the file's start.

        From the file's start, a read beginning before ``first_read_end`` (the first slab: a
        pass over the file, the next reads resume where it stops) inflates with ISA-L (zlib
        if ``isal`` cannot be imported); one beginning further in (out of order) inflates with zlib, whose states
        can be copied as snapshots for the reads to come.
        """
        best = None
        for point in self.points:
            if point[0] <= start and (best is None or point[0] > best[0]):
                best = point
        cursor = self.cursor
        if (
            cursor is not None
            and cursor.upos <= start
            and (best is None or cursor.upos >= best[0])
        ):
            self.cursor = None  # taken: it is used up by this read
            return cursor
        if best is not None:
            state = best[2].copy() if best[2] is not None else None  # None: between members
            return _Cursor(best[0], best[1], state, b"", zlib)
        engine = fast_zlib if start < first_read_end else zlib
        return _Cursor(0, 0, engine.decompressobj(31), b"", engine)

    def add(self, upos: int, cpos: int, state) -> None:
        if all(p[0] != upos for p in self.points):
            self.points.append((upos, cpos, state))


_INDEXES: OrderedDict = OrderedDict()
_INDEXES_LOCK = threading.Lock()


def _gzip_index(key) -> _GzipIndex:
    with _INDEXES_LOCK:
        index = _INDEXES.pop(key, None) or _GzipIndex()
        _INDEXES[key] = index
        while len(_INDEXES) > _MAX_INDEXED_FILES:
            _INDEXES.popitem(last=False)
        return index


def _truncated(url: str, needed: int, got: int) -> InputFileError:
    return InputFileError(
        f"src={redact(url)!r} is truncated or corrupt: its gzip stream ends after {got} "
        f"uncompressed bytes; expected at least {needed} (header + voxels)."
    )


def _corrupt(url: str, exc: Exception, upos: int) -> InputFileError:
    return InputFileError(
        f"src={redact(url)!r} is corrupt: gzip data error ({exc}) after {upos} "
        "uncompressed bytes; expected a valid .nii.gz."
    )


def read_gzip_range(
    fs,
    path: str,
    url: str,
    key,
    start: int,
    out: np.ndarray,
    *,
    check_end: bool = False,
    grid: tuple[int, int] | None = None,
) -> None:
    """Fill ``out`` (uint8) with the uncompressed bytes ``[start, start + out.size)``.

    Reads resume where the previous read of the file stopped (or at a snapshot, see
    :class:`_GzipIndex`), so reading slab after slab inflates the file once. A zlib pass
    saves a snapshot at each point ``origin + k * step`` of ``grid`` it passes (where
    reads begin: then slabs read in any order inflate the file once too; default every
    ``CHECKPOINT_EVERY`` bytes). With
    ``check_end`` (the range ends the voxel data) the rest of the gzip member is read too,
    so the inflater checks its CRC: corruption anywhere in the stream is caught when the
    last slab is read.
    """
    index = _gzip_index(key)
    grid = grid or (0, CHECKPOINT_EVERY)
    with index.lock:
        cur = index.resume(start, grid[0] + grid[1])
        with fs.open(path, "rb") as fobj:
            fobj.seek(cur.cpos)
            _inflate_range(fobj, cur, start, out, url, index, grid)
            if check_end:
                _check_member_end(fobj, cur, start + out.size, url)
        # the last slab leaves nothing to resume
        index.cursor = None if check_end else cur


def _inflate_range(fobj, cur: _Cursor, start: int, out: np.ndarray, url: str, index, grid) -> None:
    """Advance ``cur`` to ``start + out.size``, copying the bytes from ``start`` into ``out``
    (and, inflating with zlib, saving a snapshot at each point of ``grid`` passed)."""
    stop = start + out.size
    snapshots = cur.engine is zlib  # ISA-L's states cannot be copied
    origin, step = grid

    def next_point(upos):
        return origin if upos < origin else origin + ((upos - origin) // step + 1) * step

    point = next_point(cur.upos)
    while cur.upos < stop:
        if snapshots and cur.upos >= point:
            if cur.upos == point:  # the unconsumed input is re-read from the file on resuming
                state = cur.state.copy() if cur.state is not None else None
                index.add(cur.upos, cur.cpos - len(cur.pending), state)
            point = next_point(cur.upos)
        if not cur.pending:
            cur.pending = fobj.read(READ_BLOCK)
            cur.cpos += len(cur.pending)
            if not cur.pending:
                raise _truncated(url, stop, cur.upos)
        upos = cur.upos
        want = (start - upos) if upos < start else (stop - upos)
        if snapshots:
            want = min(want, point - upos)  # stop exactly at the next point
        if cur.state is None:  # a new gzip member starts
            cur.state = cur.engine.decompressobj(31)
        try:
            chunk = cur.state.decompress(cur.pending, min(want, INFLATE_STEP))
        except INFLATE_ERRORS as exc:
            raise _corrupt(url, exc, upos) from None
        cur.pending = cur.state.unconsumed_tail
        if cur.state.eof:  # end of a gzip member: another may follow
            cur.pending, cur.state = cur.state.unused_data, None
        n = len(chunk)
        lo, hi = max(upos, start), min(upos + n, stop)
        if hi > lo:
            out[lo - start : hi - start] = np.frombuffer(chunk, np.uint8)[lo - upos : hi - upos]
        cur.upos = upos + n


def _check_member_end(fobj, cur: _Cursor, stop: int, url: str) -> None:
    """Inflate to the end of the current gzip member (its CRC is checked there)."""
    while cur.state is not None and not cur.state.eof:
        if not cur.pending:
            cur.pending = fobj.read(READ_BLOCK)
            if not cur.pending:
                raise _truncated(url, stop, cur.upos)
        try:
            cur.state.decompress(cur.pending, INFLATE_STEP)  # trailing bytes, if any, ignored
        except INFLATE_ERRORS as exc:
            raise _corrupt(url, exc, cur.upos) from None
        cur.pending = cur.state.unconsumed_tail


class NiftiFile:
    """A NIfTI file by path or URL: header eager, voxels read on ``__getitem__``.

    Pickles to its URL, ``storage_options`` and parsed header (no open file), so
    dask graphs holding it run on distributed workers. ``__getitem__`` returns the
    scaled values, equal to ``nibabel.load(src).dataobj[key]`` (values and dtype).
    """

    def __init__(self, url, storage_options: dict | None = None, *, name: str = "src"):
        url = check_url(name, url)
        fs, path = check_exists(name, url, storage_options, expected="a .nii or .nii.gz file")
        info = _fs.info(fs, path)  # shared with check_exists's (inside shared_lookups)
        self.url = url
        self.storage_options = StorageOptions.wrap(storage_options)
        self.size = int(info.get("size") or 0)
        self.mtime = str(info.get("mtime") or info.get("LastModified") or info.get("ETag") or "")
        if info.get("type") == "directory":
            raise InputFileError(
                f"{name}={redact(url)!r} is a directory; expected a .nii or .nii.gz file "
                "(or a lazyconn zarr store)."
            )
        with fs.open(path, "rb") as fobj:
            magic = fobj.read(2)
        self.compressed = magic == GZIP_MAGIC
        self.header_bytes = self._read_start(fs, path, name)
        self.header = parse_header(self.header_bytes, name, url)
        self.shape = tuple(int(s) for s in self.header.get_data_shape())
        check_ndim(name, url, self.shape)
        self.raw_dtype = self.header.get_data_dtype()
        self.offset = int(self.header.get_data_offset())
        self.slope, self.inter = slope_inter(self.header)
        self.dtype = scaled_dtype(self.raw_dtype, self.slope, self.inter)
        self.ndim = len(self.shape)
        self.data_nbytes = int(np.prod(self.shape)) * self.raw_dtype.itemsize
        #: Volumes per read of a .nii.gz (its dask chunks; set by ``nifti_arrays``): zlib
        #: snapshots are saved where such reads begin. None: about ``CHECKPOINT_EVERY``.
        self.slab_volumes: int | None = None
        if not self.compressed and self.size < self.offset + self.data_nbytes:
            raise InputFileError(
                f"{name}={redact(url)!r} is truncated: {self.size} bytes; expected "
                f"{self.offset + self.data_nbytes} (header + {self.shape} {self.raw_dtype} voxels)."
            )

    def _read_start(self, fs, path: str, name: str) -> bytes:
        """Header and extensions: the bytes before the voxels."""
        import gzip

        with fs.open(path, "rb") as fobj:
            stream = gzip.GzipFile(fileobj=fobj, mode="rb") if self.compressed else fobj
            try:
                head = stream.read(540)
                header = parse_header(head, name, self.url)
                offset = int(header.get_data_offset())
                if offset > len(head):
                    head += stream.read(offset - len(head))
            except (EOFError, OSError, zlib.error) as exc:
                if isinstance(exc, InputFileError):
                    raise
                raise InputFileError(
                    f"{name}={redact(self.url)!r} is truncated or corrupt ({exc}); expected a "
                    "complete .nii or .nii.gz file."
                ) from None
        return bytes(head[: max(offset, 348)])

    # identity ---------------------------------------------------------------
    @property
    def token(self) -> tuple:
        """What identifies the voxels (for deterministic dask names), without credentials."""
        return (redact(self.url), self.size, self.mtime, self.header_bytes)

    def __repr__(self) -> str:
        return f"<NiftiFile {redact(self.url)!r} shape={self.shape} dtype={self.dtype}>"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["header"] = None  # rebuilt from bytes: smaller and version-proof
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.header = parse_header(self.header_bytes, "src", self.url)

    def _fs(self):
        from lazyconn.io._fs import get_fs

        return get_fs(self.url, self.storage_options)

    # reading ----------------------------------------------------------------
    def read_bytes(self, start: int, nbytes: int) -> np.ndarray:
        """Uncompressed file bytes ``[start, start + nbytes)`` as a writable uint8 array."""
        out = np.empty(nbytes, dtype=np.uint8)
        fs, path = self._fs()
        if self.compressed:
            end = self.offset + self.data_nbytes
            frame = int(np.prod(self.shape[:-1])) * self.raw_dtype.itemsize
            volumes = self.slab_volumes or max(1, CHECKPOINT_EVERY // max(frame, 1))
            read_gzip_range(
                fs,
                path,
                self.url,
                self.token,
                start,
                out,
                check_end=start + nbytes >= end,
                grid=(self.offset, volumes * frame),
            )
        else:
            with fs.open(path, "rb") as fobj:
                fobj.seek(start)
                got = fobj.readinto(memoryview(out)) if hasattr(fobj, "readinto") else None
                if got is None:
                    data = fobj.read(nbytes)
                    got = len(data)
                    out[:got] = np.frombuffer(data, np.uint8)
                if got < nbytes:
                    raise InputFileError(
                        f"src={redact(self.url)!r} is truncated: wanted bytes {start}-"
                        f"{start + nbytes}, got {got}."
                    )
        return out

    def read_raw(self, key) -> np.ndarray:
        """Unscaled voxels for ``key`` (a tuple of slices), in the file's dtype."""
        key = _normalize_key(key, self.shape)
        if not self.compressed:
            fs, path = self._fs()
            with fs.open(path, "rb") as fobj:
                return np.array(
                    fileslice(fobj, key, self.shape, self.raw_dtype, self.offset, order="F")
                )
        # Slowest axis range, read as one contiguous byte range, then sliced.
        last = key[-1]
        frame = int(np.prod(self.shape[:-1])) * self.raw_dtype.itemsize
        lo, hi = last.start, last.stop
        buf = self.read_bytes(self.offset + lo * frame, (hi - lo) * frame)
        slab = buf.view(self.raw_dtype).reshape(self.shape[:-1] + (hi - lo,), order="F")
        return slab[key[:-1] + (slice(None),)]

    def __getitem__(self, key) -> np.ndarray:
        return scale(self.read_raw(key), self.slope, self.inter)


def _normalize_key(key, shape) -> tuple[slice, ...]:
    if not isinstance(key, tuple):
        key = (key,)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for a {len(shape)}-D NiftiFile: {key!r}")
    key = key + (slice(None),) * (len(shape) - len(key))
    out = []
    for k, n in zip(key, shape, strict=True):
        if not isinstance(k, slice):
            raise TypeError(f"NiftiFile indices must be slices, got {k!r}")
        start, stop, step = k.indices(n)
        if step != 1:
            raise TypeError(f"NiftiFile slices must have step 1, got {k!r}")
        out.append(slice(start, stop))
    return tuple(out)
