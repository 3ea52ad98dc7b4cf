"""The results store: per-subject results, one object each, keyed by input and parameters.

A subject's entry is one object ``<store>/<key>.result``: a header (shape, dtype, the
subject's attributes), the values and a crc32c of both, written by one atomic write (a
rename locally, one PUT on an object store), so an entry is whole or absent. An entry that
fails its checks is reported and computed again. The store is marked by
``<store>/lazyconn-results.json``; it may be a local directory or an fsspec URL
(``storage_options``), with the same guarantees and a few requests per subject (one listing
per run, one GET per cached subject, one PUT per computed one).

The key is ``tokenize(input identity, confounds identity, sample_mask, parameters token)``:

* a local file: resolved path, size and modification time (ns);
* a local zarr store: resolved path plus the bytes of its root ``zarr.json`` (attributes,
  completion marker) and that file's size and mtime;
* a URL: the path and what fsspec reports for it (size, ETag / mtime);
* an in-memory image: a dask tokenize of its voxels (a LazyImage: its dask name, which dask
  derives from the data or the store it reads) and affine.

The parameters token hashes the masker's and the measure's ``get_params()`` (nested
estimators by class and parameters; ``verbose``, ``memory``, ``memory_level`` and ``n_jobs``
left out because they never change numbers), the masker's fitted state, and lazyconn's
version, so a changed parameter never reuses a stale result.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
from dask.base import tokenize

from lazyconn._utils import warn
from lazyconn.exceptions import IntegrityWarning, OutputExistsError, ParameterTypeError
from lazyconn.io._crc import crc32c
from lazyconn.io._fs import (
    StorageOptions,
    access_errors,
    atomic_local_file,
    check_url,
    get_fs,
    is_local,
    local_path,
    redact,
)
from lazyconn.io._fs import (
    info as shared_info,  # one request per remote object inside shared_lookups
)

#: Parameters that never change the numbers and so are left out of the cache key.
_IGNORED_PARAMS = frozenset({"verbose", "memory", "memory_level", "n_jobs"})

_STORE_FORMAT = "lazyconn-results"
_STORE_VERSION = 2


def _is_url(src: str) -> bool:
    return "://" in src and not src.startswith("file://")


def _path_identity(src, storage_options=None) -> tuple:
    """Identity of a path or URL: where it is and what version of it is there."""
    src = os.fspath(src)
    if _is_url(src):
        import fsspec  # imported here: plain local runs never need it

        fs, path = fsspec.core.url_to_fs(src, **(storage_options or {}))
        info = None
        # a store: one request (its zarr.json), shared with load's checks (shared_lookups)
        if path.rstrip("/").endswith(".zarr"):
            with contextlib.suppress(FileNotFoundError):
                info = {**shared_info(fs, path.rstrip("/") + "/zarr.json"), "dir": True}
        if info is None:
            info = shared_info(fs, path)
            if info.get("type") == "directory":
                with contextlib.suppress(FileNotFoundError):
                    info = {**shared_info(fs, path.rstrip("/") + "/zarr.json"), "dir": True}
        keep = {k: str(v) for k, v in info.items() if k.lower() in _URL_VERSION_FIELDS}
        return ("url", src, tuple(sorted(keep.items())))
    path = Path(src.removeprefix("file://")).expanduser().resolve()
    try:
        st = path.stat()
    except OSError:
        # A missing input is reported by the subject's own task (naming the subject).
        return ("missing", str(path))
    if path.is_dir():
        meta = path / "zarr.json"
        if meta.is_file():
            mst = meta.stat()
            return ("zarr", str(path), meta.read_bytes(), mst.st_size, mst.st_mtime_ns)
        return ("dir", str(path), st.st_mtime_ns)
    return ("file", str(path), st.st_size, st.st_mtime_ns)


_URL_VERSION_FIELDS = frozenset(
    {"size", "etag", "mtime", "lastmodified", "last_modified", "created", "versionid", "dir"}
)


def input_identity(obj, storage_options=None):
    """A hashable description of an input that changes whenever its content can change."""
    from lazyconn.image import LazyImage  # group layer may import image

    if obj is None:
        return None
    if isinstance(obj, (str, os.PathLike)):
        return _path_identity(obj, storage_options)
    if isinstance(obj, LazyImage):
        return ("lazyimage", obj.data.name, tokenize(obj.affine))
    filename = getattr(obj, "get_filename", lambda: None)()
    if filename is not None and getattr(obj, "in_memory", False) is False:
        return ("nibabel-file", _path_identity(filename))
    if hasattr(obj, "dataobj") and hasattr(obj, "affine"):
        return ("nibabel", tokenize(np.asanyarray(obj.dataobj), np.asarray(obj.affine)))
    if hasattr(obj, "to_numpy") and hasattr(obj, "columns"):  # a DataFrame of confounds
        return ("frame", tokenize(obj.to_numpy(), list(map(str, obj.columns))))
    if isinstance(obj, (list, tuple)):
        return tuple(input_identity(o, storage_options) for o in obj)
    return ("object", tokenize(obj))


def _normalize(value):
    """Turn parameters (estimators, arrays, images, frames) into tokenizable plain data."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return ("ndarray", tokenize(value))
    if isinstance(value, dict):
        return tuple(sorted((str(k), _normalize(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_normalize(v) for v in value)
    if hasattr(value, "get_params") and callable(value.get_params):
        params = value.get_params(deep=False)
        params = {k: v for k, v in params.items() if k not in _IGNORED_PARAMS}
        cls = type(value)
        return ("estimator", f"{cls.__module__}.{cls.__qualname__}", _normalize(params))
    return ("input", input_identity(value))


def _fitted_state(estimator) -> tuple:
    """Fitted attributes (``name_``) of an estimator, normalised: a mask computed at fit counts."""
    state = {
        k: v
        for k, v in vars(estimator).items()
        if k.endswith("_") and not k.startswith("_") and not callable(v)
    }
    return _normalize(state)


def params_token(*estimators, extra=None) -> str:
    """Token of the estimators' parameters and fitted state, plus lazyconn's version."""
    import lazyconn

    parts = [(_normalize(est), _fitted_state(est)) for est in estimators]
    return tokenize(parts, _normalize(extra), lazyconn.__version__)


class ResultStore:
    """Per-subject results, one object per subject, on the local disk or an object store.

    An entry ``<store>/<key>.result`` holds, in one object, a header (the result's shape
    and dtype and the subject's attributes, JSON), the values, and a crc32c of both. It is
    written by one atomic write (a rename of a finished temporary file locally, one PUT on
    an object store), so an entry is either absent or whole: the completion mark is the
    entry itself. Finding what is done is one listing of the store, reading a result back
    one read, storing it one write (an object store sees one LIST per run, one GET per
    cached subject and one PUT per computed one).

    Each entry is verified before use: a truncated, corrupted or undecodable entry is
    reported with an :class:`~lazyconn.exceptions.IntegrityWarning` and treated as
    missing, so the subject is computed again; it is never read as zeros or wrong numbers.

    Creating the store is idempotent (several processes may open a new ``cache_dir`` at
    once), and concurrent puts of one key leave one whole entry: a key names its input and
    parameters, so two writers of a key write the same numbers. A store written by an
    earlier lazyconn (version 1: a Zarr group per subject) is reused; its entries are not
    read and are computed again.

    Parameters
    ----------
    path : str or Path
        Directory or fsspec URL (``s3://bucket/cache``) of the store; created if missing.
    storage_options : dict, optional
        fsspec options for a URL ``path`` (credentials are never written to the store).
    """

    def __init__(self, path, storage_options=None):
        if not isinstance(path, (str, os.PathLike)):
            raise ParameterTypeError(
                f"cache_dir={path!r} has type {type(path).__name__}; expected a directory "
                "path or an fsspec URL (str or pathlib.Path)."
            )
        url = check_url("cache_dir", path)
        if is_local(url):
            url = str(Path(local_path(url)).resolve())
        self.url = url
        self.path = Path(url) if is_local(url) else None
        self.storage_options = StorageOptions.wrap(storage_options)
        if self.path is None:
            self._fs, root = get_fs(url, self.storage_options)
            self._root = root.rstrip("/")
        with access_errors("cache_dir", url):
            self._open_root()

    # -- where things are ------------------------------------------------------------
    def _where(self, name: str) -> str:
        return str(self.path / name) if self.path is not None else f"{self._root}/{name}"

    def _entry(self, key: str) -> str:
        return self._where(f"{key}{_ENTRY_SUFFIX}")

    def _read(self, where: str) -> bytes | bytearray | None:
        """An object's bytes, None if absent (one GET on an object store)."""
        if self.path is None:
            return self._read_many([where])[0]
        try:
            with open(where, "rb") as handle:
                return bytearray(handle.read())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _read_many(self, where: list[str]) -> list:
        """Objects' bytes (None if absent), fetched concurrently, one GET each: a range from
        byte 0 (s3fs's whole-object read asks for the size first, a HEAD per object)."""
        out = self._fs.cat_ranges(where, 0, None, on_error="return")
        for value in out:
            if isinstance(value, BaseException) and not isinstance(value, FileNotFoundError):
                raise value
        return [None if isinstance(v, BaseException) else v for v in out]

    def _write(self, where: str, parts: list) -> None:
        """Write ``parts`` as one object, atomically (readers see all of it or nothing)."""
        if self.path is None:
            self._fs.pipe_file(where, b"".join(parts))  # one PUT
            return
        with atomic_local_file(where) as handle:
            for part in parts:
                handle.write(part)

    def _listed(self) -> set[str]:
        """Keys with an entry in the store (one listing)."""
        if self.path is not None:
            names = os.listdir(self.path)
        else:
            self._fs.invalidate_cache(self._root)  # other processes write here too
            try:
                names = [n.rsplit("/", 1)[-1] for n in self._fs.ls(self._root, detail=False)]
            except FileNotFoundError:
                names = []
        return {
            n[: -len(_ENTRY_SUFFIX)]
            for n in names
            if n.endswith(_ENTRY_SUFFIX) and not n.startswith(".")
        }

    def _open_root(self) -> None:
        """Check or create the store's mark; safe when several processes race."""
        mark = self._where(_ROOT_MARK)
        found = self._read(mark)
        if found is not None:
            try:
                meta = json.loads(bytes(found))
            except ValueError:
                meta = {}
            if meta.get("format") == _STORE_FORMAT:
                return
            raise OutputExistsError(
                f"cache_dir={redact(self.url)!r} holds a {_ROOT_MARK!r} that is not a lazyconn "
                "results store's; expected a new or existing results store directory."
            )
        zarr_meta = self._read(self._where("zarr.json"))
        if zarr_meta is not None:  # a version-1 results store (zarr groups), or not one
            try:
                attrs = json.loads(bytes(zarr_meta)).get("attributes", {})
            except ValueError:
                attrs = {}
            if attrs.get("format") != _STORE_FORMAT:
                raise OutputExistsError(
                    f"cache_dir={redact(self.url)!r} is a zarr group that is not a lazyconn "
                    "results store; expected a new or existing results store directory."
                )
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
        marker = json.dumps({"format": _STORE_FORMAT, "version": _STORE_VERSION}).encode()
        self._write(mark, [marker])

    def __repr__(self) -> str:
        return f"ResultStore({redact(self.url)!r})"

    def __reduce__(self):
        return (type(self), (self.url, self.storage_options))

    # -- entries -----------------------------------------------------------------------
    def get(self, key: str, *, warn_invalid: bool = True) -> tuple[np.ndarray, dict] | None:
        """The stored result and its attributes; None if absent or corrupt."""
        return self._decode(key, self._read(self._entry(key)), warn_invalid)

    def get_many(self, keys) -> dict[str, tuple[np.ndarray, dict]]:
        """The stored results of ``keys`` that are present and valid, by key.

        One listing, then one read per listed key (concurrent on an object store).
        """
        present = self._listed()
        wanted = [k for k in dict.fromkeys(keys) if k in present]
        if not wanted:
            return {}
        if self.path is not None:
            raw = [self._read(self._entry(k)) for k in wanted]
        else:
            raw = self._read_many([self._entry(k) for k in wanted])
        found = {}
        for key, value in zip(wanted, raw, strict=True):
            hit = self._decode(key, value, True)  # None: removed since the listing, or corrupt
            if hit is not None:
                found[key] = hit
        return found

    def _decode(self, key, data, warn_invalid):
        if data is None:
            return None
        attrs: dict = {}
        try:
            result, attrs = _unpack(data)
        except _CorruptEntry as exc:
            if warn_invalid:
                warn(
                    f"results store {redact(self.url)!r}: the entry {key!r} of subject "
                    f"{exc.subject!r} failed verification ({exc}); it is computed again.",
                    IntegrityWarning,
                )
            return None
        return result, attrs

    def put(self, key: str, result: np.ndarray, attrs: dict | None = None) -> None:
        """Write a result with its attributes as one object (one atomic write)."""
        result = np.ascontiguousarray(result)
        if result.dtype.hasobject:
            raise ParameterTypeError(
                f"result of {key!r} has dtype {result.dtype}; expected a numeric array."
            )
        meta = json.loads(json.dumps(attrs or {}, default=str))
        meta.update({"shape": list(result.shape), "dtype": result.dtype.str})
        self._write(self._entry(key), _pack(result, meta))

    def keys(self) -> list[str]:
        """Keys of the complete, valid entries."""
        return sorted(k for k in self._listed() if self.get(k) is not None)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


#: The store's mark (a small JSON object), and each entry's name suffix.
_ROOT_MARK = "lazyconn-results.json"
_ENTRY_SUFFIX = ".result"
#: An entry: magic, header length (uint64 LE), header JSON, values, crc32c (uint32 LE) of
#: everything before it.
_MAGIC = b"LAZYCONN-RESULT\n"


class _CorruptEntry(ValueError):
    def __init__(self, problem: str, subject=None):
        super().__init__(problem)
        self.subject = subject


def _crc32c(crc: int, data) -> int:
    return crc32c(np.frombuffer(data, dtype=np.uint8), crc)


def _pack(result: np.ndarray, meta: dict) -> list:
    header = json.dumps(meta).encode()
    head = _MAGIC + len(header).to_bytes(8, "little") + header
    values = memoryview(result.reshape(-1)).cast("B") if result.size else b""
    crc = _crc32c(_crc32c(0, head), values)
    return [head, values, crc.to_bytes(4, "little")]


def _unpack(data) -> tuple[np.ndarray, dict]:
    """(values, attributes) of an entry's bytes; _CorruptEntry if it fails any check."""
    start = len(_MAGIC) + 8
    if len(data) < start + 4 or bytes(data[: len(_MAGIC)]) != _MAGIC:
        raise _CorruptEntry(f"not a result entry ({len(data)} bytes, no lazyconn header)")
    size = int.from_bytes(data[len(_MAGIC) : start], "little")
    try:
        meta = json.loads(bytes(data[start : start + size]))
        subject = meta.get("subject")
    except (ValueError, AttributeError):
        meta, subject = None, None
    body = memoryview(data)[:-4]
    if _crc32c(0, body) != int.from_bytes(data[-4:], "little"):
        raise _CorruptEntry(
            "its bytes do not match the crc32c recorded when it was written (corrupted or "
            "truncated)",
            subject,
        )
    try:
        dtype = np.dtype(meta["dtype"])
        shape = tuple(int(n) for n in meta["shape"])
        values = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=start + size)
    except (TypeError, KeyError, ValueError) as exc:
        raise _CorruptEntry(f"it cannot be read ({type(exc).__name__}: {exc})", subject) from None
    if values.nbytes != len(body) - start - size:
        raise _CorruptEntry("its length differs from its record", subject)
    if not values.flags.writeable:  # bytes from an object store: a result users may modify
        values = values.copy()
    meta["complete"] = True
    return values.reshape(shape), meta
