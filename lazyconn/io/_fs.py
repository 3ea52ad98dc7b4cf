"""Paths and fsspec URLs: scheme checks, filesystem lookup, credential-free names.

Credentials never leave the process: :class:`StorageOptions` shows secret-like values
masked, :func:`redact` removes ``user:password@`` from URLs (also when the password holds
``/``), and a store that refuses the credentials is reported as
:class:`~lazyconn.exceptions.AccessDeniedError` naming the URL without them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import known_implementations

from lazyconn.exceptions import (
    AccessDeniedError,
    InputNotFoundError,
    LazyconnError,
    OutputNotWritableError,
    ParameterError,
    ParameterTypeError,
)

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: Schemes whose authority may be host:port (a path holding "@" is then not credentials).
_HOST_PORT_SCHEMES = frozenset({"http", "https", "ftp", "sftp", "ssh", "webhdfs", "hdfs"})
#: Option names whose values are credentials (matched anywhere in the name, any case).
_SECRET_NAME_RE = re.compile(
    r"secret|passw|token|credential|signature|private|key|sas|auth|session", re.IGNORECASE
)
_MASK = "***"


def _is_secret_name(name) -> bool:
    return isinstance(name, str) and bool(_SECRET_NAME_RE.search(name))


def _masked(value):
    """``value`` with secret-like entries replaced by ``'***'`` and URLs redacted."""
    if isinstance(value, dict):
        return {k: _MASK if _is_secret_name(k) else _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_masked(v) for v in value)
    if isinstance(value, str) and url_scheme(value) is not None:
        return redact(value)
    return value


class StorageOptions(dict):
    """fsspec ``storage_options`` whose ``repr``/``str`` mask credentials.

    A plain ``dict`` subclass: fsspec, zarr and pickling see the real values; only the
    printed form shows secret-like entries (``key``, ``secret``, ``token``, ``password``,
    ``aws_secret_access_key``... at any nesting level) as ``'***'``. Estimators wrap the
    ``storage_options`` they are given in it, so ``repr(estimator)``, ``str`` and a printed
    ``get_params()`` never show a secret; ``sklearn.base.clone`` copies it unchanged.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(_masked(dict(self)))

    __str__ = __repr__

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython
        printer.text(repr(self))

    @classmethod
    def wrap(cls, value):
        """``value`` as StorageOptions (None and StorageOptions unchanged; others copied)."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ParameterTypeError(
                f"storage_options has type {type(value).__name__}; expected None or a dict of "
                "fsspec options (values not shown: they may hold credentials)."
            )
        return cls(value)


def url_scheme(url: str) -> str | None:
    """The scheme of ``url`` (``"s3"``), or None for a plain local path."""
    match = _URL_RE.match(url)
    return match.group(1).lower() if match else None


def _userinfo_span(url: str) -> tuple[int, int] | None:
    """(start, end) of the ``user[:password]@`` part of a URL's authority, or None.

    AWS secrets often hold ``/``, so the authority is not simply "up to the first /": a
    ``:`` before the first ``/`` and an ``@`` after it mean credentials, except for a
    host:port authority (http, ftp...) whose path holds an ``@``.
    """
    match = _URL_RE.match(url)
    if not match:
        return None
    start = match.end()
    rest = url[start:]
    at = rest.find("@")
    if at < 0:
        return None
    head = rest[:at]
    if "/" in head:
        first = head.split("/", 1)[0]
        if ":" not in first:
            return None  # an "@" in the path, no credentials
        port = first.split(":", 1)[1]
        if match.group(1).lower() in _HOST_PORT_SCHEMES and port.isdigit():
            return None  # host:port/path@...
    return start, start + at + 1


def redact(url) -> str:
    """``url`` without any ``user:password@`` part (for reprs, messages and metadata)."""
    url = os.fspath(url)
    span = _userinfo_span(url)
    return url if span is None else url[: span[0]] + url[span[1] :]


@contextlib.contextmanager
def access_errors(name: str, url: str):
    """Report a store's refusal of the credentials as AccessDeniedError naming ``url``.

    fsspec/s3fs raise a bare ``PermissionError('Forbidden')`` naming no URL; this names
    the parameter and the URL (without credentials) and never shows the options.
    """
    try:
        yield
    except LazyconnError:
        raise
    except PermissionError as exc:
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
        raise AccessDeniedError(
            f"{name}={redact(url)!r} cannot be accessed: the storage refused access "
            f"({reason}); expected credentials (storage_options or the environment) allowed "
            "to read and write it."
        ) from None


def check_url(name: str, url) -> str:
    """Return ``url`` as a str; raise ParameterError for an unknown URL scheme."""
    if not isinstance(url, (str, os.PathLike)):
        raise ParameterTypeError(
            f"{name}={url!r} has type {type(url).__name__}; expected a path or URL string."
        )
    url = os.fspath(url)
    if redact(url) != url:
        raise ParameterError(
            f"{name}={redact(url)!r} has credentials in its URL (user:password@, shown "
            "removed); expected them in storage_options, where they are never shown or stored."
        )
    scheme = url_scheme(url)
    if scheme is not None and scheme not in known_implementations:
        raise ParameterError(
            f"{name}={redact(url)!r} has unknown URL scheme {scheme!r}; expected a local path "
            "or an fsspec URL such as 's3://bucket/key' or 'file:///path'."
        )
    return url


def is_local(url: str) -> bool:
    return url_scheme(url) in (None, "file", "local")


def local_path(url: str) -> str:
    """Local filesystem path of a plain path or ``file://`` URL."""
    if url_scheme(url) in ("file", "local"):
        url = url.split("://", 1)[1]
    return str(Path(url).expanduser())


@contextlib.contextmanager
def atomic_local_file(path: str):
    """Write a local file atomically: the block writes a hidden temporary file beside
    ``path`` (binary), renamed onto ``path`` when the block ends without error, so readers
    see the old file or the whole new one; the temporary file is removed if writing fails."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.lazyconn-tmp")
    try:
        with open(tmp, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def get_fs(url: str, storage_options: dict | None = None):
    """(filesystem, path-in-filesystem) for a path or URL."""
    if is_local(url):
        return fsspec.filesystem("file"), local_path(url)
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


_LOOKUPS: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "lazyconn_lookups", default=None
)


@contextlib.contextmanager
def shared_lookups():
    """Within the block, each remote object's metadata is asked of its store once.

    Opening one input asks the same question several times (does it exist, is it a store,
    which version is it, for the results store's key): on an object store, each was a HEAD
    of the same ``zarr.json``. Blocks nest (the outermost one's answers are shared) and the
    answers die with the block, so a later call sees a changed input. Local paths are not
    remembered (a ``stat`` costs nothing).
    """
    if _LOOKUPS.get() is not None:
        yield
        return
    token = _LOOKUPS.set({})
    try:
        yield
    finally:
        _LOOKUPS.reset(token)


def info(fs, path: str) -> dict:
    """``fs.info(path)`` (FileNotFoundError when absent), asked once per
    :func:`shared_lookups` block for remote paths."""
    memo = _LOOKUPS.get()
    if memo is None or isinstance(fs, LocalFileSystem):
        return fs.info(path)
    key = (fs, path)
    if key not in memo:
        try:
            memo[key] = fs.info(path)
        except FileNotFoundError as exc:
            memo[key] = exc
    found = memo[key]
    if isinstance(found, FileNotFoundError):
        raise FileNotFoundError(*found.args)
    return found


def exists(fs, path: str) -> bool:
    """``fs.exists(path)``, from :func:`info` (shared inside :func:`shared_lookups`)."""
    if _LOOKUPS.get() is None or isinstance(fs, LocalFileSystem):
        return fs.exists(path)
    try:
        info(fs, path)
    except FileNotFoundError:
        return False
    return True


def check_exists(name: str, url: str, storage_options: dict | None = None, *, expected: str):
    """Raise InputNotFoundError if ``url`` does not exist; return (fs, path)."""
    fs, path = get_fs(url, storage_options)
    with access_errors(name, url):
        # a store in a bucket is no object: its zarr.json is one HEAD, the prefix a HEAD + LIST
        store = not is_local(url) and path.rstrip("/").endswith(".zarr")
        found = (store and exists(fs, path.rstrip("/") + "/zarr.json")) or exists(fs, path)
    if not found:
        raise InputNotFoundError(f"{name}={redact(url)!r} does not exist; expected {expected}.")
    return fs, path


def check_writable(name: str, url: str, storage_options: dict | None = None) -> None:
    """Fail now, naming ``url``, if an object-store destination cannot be written.

    Writes and removes an empty probe object beside ``url``: a bucket that does not exist
    fails with one clear :class:`~lazyconn.exceptions.OutputNotWritableError`, denied access
    or bad credentials with :class:`~lazyconn.exceptions.AccessDeniedError` (as on reads),
    before any work starts, not as a storage error from inside a running graph. Local paths
    are checked by the writers.
    The message names the URL without credentials and never repeats the storage error text.
    """
    if is_local(url):
        return
    import uuid

    fs, path = get_fs(url, storage_options)
    path = path.rstrip("/")
    parent = path.rsplit("/", 1)[0] if "/" in path else path
    bucket = path.split("/", 1)[0]
    probe = f"{parent}/.lazyconn-write-probe-{uuid.uuid4().hex}"
    try:
        # Refused credentials are AccessDeniedError, for writes as for reads.
        with access_errors(name, url):
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
    except AccessDeniedError:
        raise
    except FileNotFoundError:
        reason = f"its bucket {bucket!r} does not exist"
    except OSError as exc:
        reason = f"a test write beside it failed ({type(exc).__name__})"
    else:
        return
    raise OutputNotWritableError(
        f"{name}={redact(url)!r} cannot be written: {reason}; expected a location in an "
        "existing bucket that these storage_options may write to."
    )


def strip_suffix(url: str) -> str:
    """Base name of a path/URL without ``.nii``, ``.nii.gz`` or ``.zarr``."""
    base = redact(url).rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii", ".zarr"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base
