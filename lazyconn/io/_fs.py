"""Paths and fsspec URLs: scheme checks, filesystem lookup, credential-free names."""

from __future__ import annotations

import os
import re
from pathlib import Path

import fsspec
from fsspec.registry import known_implementations

from lazyconn.exceptions import InputNotFoundError, ParameterError, ParameterTypeError

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# user:password@ in a URL's authority part.
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@]*@")


def url_scheme(url: str) -> str | None:
    """The scheme of ``url`` (``"s3"``), or None for a plain local path."""
    match = _URL_RE.match(url)
    return match.group(1).lower() if match else None


def redact(url) -> str:
    """``url`` without any ``user:password@`` part (for reprs, messages and metadata)."""
    return _USERINFO_RE.sub(r"\1", os.fspath(url))


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


def get_fs(url: str, storage_options: dict | None = None):
    """(filesystem, path-in-filesystem) for a path or URL."""
    if is_local(url):
        return fsspec.filesystem("file"), local_path(url)
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def check_exists(name: str, url: str, storage_options: dict | None = None, *, expected: str):
    """Raise InputNotFoundError if ``url`` does not exist; return (fs, path)."""
    fs, path = get_fs(url, storage_options)
    if not fs.exists(path):
        raise InputNotFoundError(f"{name}={redact(url)!r} does not exist; expected {expected}.")
    return fs, path


def strip_suffix(url: str) -> str:
    """Base name of a path/URL without ``.nii``, ``.nii.gz`` or ``.zarr``."""
    base = redact(url).rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii", ".zarr"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base
