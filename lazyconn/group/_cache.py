"""The results store: per-subject results in a Zarr v3 group, keyed by input and parameters.

A subject's entry is ``<store>/<key>/`` holding the array ``result`` and attributes. It is
written in two steps: the array first, then the attributes with ``"complete": true``. zarr's
local store writes every file atomically, so an interrupted write leaves an entry without the
marker, which reads as missing and is overwritten by the next run.

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

from lazyconn.exceptions import ParameterTypeError

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
    """Per-subject results in a Zarr v3 group on the local disk.

    Parameters
    ----------
    path : str or Path
        Directory of the store; created if missing.
    """

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise ParameterTypeError(
                f"cache_dir={path!r} has type {type(path).__name__}; expected a local directory "
                "path (str or pathlib.Path)."
            )
        self.path = Path(path).expanduser().resolve()
        root = zarr.open_group(self.path, mode="a")
        if root.attrs.get("format") != _STORE_FORMAT:
            root.attrs.update({"format": _STORE_FORMAT, "version": _STORE_VERSION})

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    def __reduce__(self):
        return (type(self), (str(self.path),))

    def get(self, key: str) -> tuple[np.ndarray, dict] | None:
        """The stored result and its attributes, or None if absent or incomplete."""
        entry = self.path / key
        if not (entry / "zarr.json").is_file():
            return None
        try:
            group = zarr.open_group(entry, mode="r")
            attrs = dict(group.attrs)
            if attrs.get("complete") is not True:
                return None
            result = group["result"][...]
        except Exception:
            return None
        if list(result.shape) != attrs.get("shape"):
            return None
        return result, attrs

    def put(self, key: str, result: np.ndarray, attrs: dict | None = None) -> None:
        """Write a result, then mark it complete (never a finished-looking partial entry)."""
        result = np.asarray(result)
        group = zarr.open_group(self.path / key, mode="w")
        group.create_array("result", data=result, chunks=result.shape or None)
        meta = json.loads(json.dumps(attrs or {}, default=str))
        meta.update({"shape": list(result.shape), "dtype": str(result.dtype)})
        group.attrs.update(meta)
        group.attrs["complete"] = True

    def keys(self) -> list[str]:
        """Keys of the complete entries."""
        return sorted(
            p.name for p in self.path.iterdir() if p.is_dir() and self.get(p.name) is not None
        )

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None
