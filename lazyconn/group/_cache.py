"""The results store: per-subject results in a Zarr v3 group, keyed by input and parameters.

A subject's entry is ``<store>/<key>/`` holding the array ``result`` and attributes. It is
written in two steps: the array first, then the attributes with ``"complete": true``, the
result's shape, dtype and CRC-32 in one write. An interrupted write leaves an entry without
the marker, which reads as missing and is overwritten by the next run; an entry whose chunk
is missing or whose values fail the CRC is reported and computed again. The store may be a
local directory or an fsspec URL (``storage_options``), with the same guarantees.

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
import zarr
from dask.base import tokenize

from lazyconn._utils import warn
from lazyconn.exceptions import (
    IntegrityWarning,
    MissingChunkError,
    OutputExistsError,
    ParameterTypeError,
)
from lazyconn.io._fs import StorageOptions, access_errors, check_url, is_local, local_path, redact
from lazyconn.io.store import CompleteStore, _zarr_store

#: Parameters that never change the numbers and so are left out of the cache key.
_IGNORED_PARAMS = frozenset({"verbose", "memory", "memory_level", "n_jobs"})

_STORE_FORMAT = "lazyconn-results"
_STORE_VERSION = 1


def _is_url(src: str) -> bool:
    return "://" in src and not src.startswith("file://")


def _path_identity(src, storage_options=None) -> tuple:
    """Identity of a path or URL: where it is and what version of it is there."""
    src = os.fspath(src)
    if _is_url(src):
        import fsspec  # imported here: plain local runs never need it

        fs, path = fsspec.core.url_to_fs(src, **(storage_options or {}))
        info = fs.info(path)
        if info.get("type") == "directory":
            with contextlib.suppress(FileNotFoundError):
                info = {**fs.info(path.rstrip("/") + "/zarr.json"), "dir": True}
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
    """Per-subject results in a Zarr v3 group, on the local disk or an object store.

    Each entry is verified before use: it must carry the completion mark, every chunk of
    its array must be present (a missing one is an error, never zeros) and the values
    must match the CRC-32 recorded when it was written. An entry that fails is reported
    with an :class:`~lazyconn.exceptions.IntegrityWarning` and treated as missing, so the
    subject is computed again.

    Creating the store is idempotent (several processes may open a new ``cache_dir`` at
    once), and concurrent puts of one key leave one complete entry: a key names its
    input and parameters, so two writers of a key write the same numbers.

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
        with access_errors("cache_dir", url):
            self._open_root()

    def _zarr(self, read_only: bool = False):
        return _zarr_store(self.url, self.storage_options, read_only=read_only)

    def _open_root(self):
        """Open the root group, creating it if needed; safe when several processes race."""
        meta = {"format": _STORE_FORMAT, "version": _STORE_VERSION}
        root = _open_or_create(self._zarr(), None, meta)
        if root.attrs.get("format") != _STORE_FORMAT:
            if set(root.group_keys()) or set(root.array_keys()):
                raise OutputExistsError(
                    f"cache_dir={redact(self.url)!r} is a zarr group that is not a lazyconn "
                    "results store; expected a new or existing results store directory."
                )
            root.attrs.update({"format": _STORE_FORMAT, "version": _STORE_VERSION})
        return root

    def __repr__(self) -> str:
        return f"ResultStore({redact(self.url)!r})"

    def __reduce__(self):
        return (type(self), (self.url, self.storage_options))

    def _checked(self, key: str, read_only: bool = True):
        """The entry's store, raising MissingChunkError for any absent chunk of it."""
        return CompleteStore(self._zarr(read_only), f"{redact(self.url)}/{key}", prefix=f"{key}/")

    def get(self, key: str, *, warn_invalid: bool = True) -> tuple[np.ndarray, dict] | None:
        """The stored result and its attributes; None if absent, incomplete or corrupt."""
        from zarr.errors import GroupNotFoundError

        try:
            group = zarr.open_group(self._checked(key), path=key, mode="r")
            attrs = group.attrs.asdict()
        except (GroupNotFoundError, FileNotFoundError, KeyError, MissingChunkError):
            return None
        if attrs.get("complete") is not True:
            return None  # half-written (a crash, or another writer still at it)
        try:
            result = np.asarray(group["result"][...])
            problem = None
            if list(result.shape) != attrs.get("shape") or str(result.dtype) != attrs.get("dtype"):
                problem = f"shape/dtype {result.shape} {result.dtype} differ from its record"
            elif "crc32" in attrs and _crc32(result) != attrs["crc32"]:
                problem = "its values do not match the CRC-32 recorded when it was written"
        except MissingChunkError as exc:
            problem = str(exc)
        except Exception as exc:  # undecodable bytes (any codec's error), missing array
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        if problem is not None:
            if warn_invalid:
                warn(
                    f"results store {redact(self.url)!r}: the entry {key!r} of subject "
                    f"{attrs.get('subject')!r} failed verification ({problem}); it is "
                    "computed again.",
                    IntegrityWarning,
                )
            return None
        return result, attrs

    def put(self, key: str, result: np.ndarray, attrs: dict | None = None) -> None:
        """Write a result, then its attributes and completion mark in one last write.

        A complete, valid entry already there (written by another process) is kept.
        """
        if self.get(key, warn_invalid=False) is not None:
            return
        result = np.ascontiguousarray(result)
        # Nothing is deleted: another process may be writing the same key (same numbers),
        # and each file write is atomic (a rename locally, one PUT on an object store).
        group = _open_or_create(self._zarr(), key)
        if group.attrs.get("complete") is True:  # a corrupt entry: unmark it while rewriting
            group.attrs["complete"] = False
        array = group.get("result")
        if array is None or array.shape != result.shape or array.dtype != result.dtype:
            from zarr.errors import ContainsArrayError

            try:
                array = group.create_array(
                    "result",
                    shape=result.shape,
                    dtype=result.dtype,
                    chunks=result.shape or None,
                    overwrite=array is not None,
                )
            except ContainsArrayError:  # created by the other writer meanwhile
                array = group["result"]
        array[...] = result
        meta = json.loads(json.dumps(attrs or {}, default=str))
        meta.update(
            {
                "shape": list(result.shape),
                "dtype": str(result.dtype),
                "crc32": _crc32(result),
                "complete": True,
            }
        )
        group.attrs.update(meta)  # one write of zarr.json: the mark comes with the record

    def keys(self) -> list[str]:
        """Keys of the complete, valid entries."""
        root = zarr.open_group(self._zarr(True), mode="r")
        return sorted(k for k in root.group_keys() if self.get(k) is not None)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


def _open_or_create(store, path: str | None, attributes: dict | None = None):
    """Open a group, or create it; another process creating it at the same time is fine."""
    from zarr.errors import ContainsGroupError, GroupNotFoundError

    kw = {} if path is None else {"path": path}
    try:
        return zarr.open_group(store, mode="r+", **kw)
    except (GroupNotFoundError, FileNotFoundError):
        pass
    try:
        return zarr.create_group(store, attributes=attributes, overwrite=False, **kw)
    except ContainsGroupError:  # created by another process meanwhile
        return zarr.open_group(store, mode="r+", **kw)


def _crc32(values: np.ndarray) -> int:
    import zlib

    return zlib.crc32(np.ascontiguousarray(values).view(np.uint8).reshape(-1))
