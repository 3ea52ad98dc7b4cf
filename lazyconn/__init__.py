"""lazyconn: lazy, out-of-core fMRI functional connectomics with nilearn's API.

Submodules are imported on first use so ``import lazyconn`` stays cheap.
"""

from __future__ import annotations

import importlib

from lazyconn.image import LazyImage, load

__version__ = "0.1.0.dev0"

_SUBMODULES = {
    "connectome",
    "datasets",
    "decomposition",
    "group",
    "image",
    "interfaces",
    "io",
    "maskers",
    "masking",
    "ops",
    "regions",
    "signal",
    "testing",
}
_LAZY_ATTRS = {"convert": "lazyconn.io.convert"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"lazyconn.{name}")
    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    raise AttributeError(f"module 'lazyconn' has no attribute {name!r}")


__all__ = ["LazyImage", "__version__", "convert", "load"]
