"""Shared validators and small helpers used by every layer."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lazyconn.exceptions import ParameterError, ParameterTypeError

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def find_stack_level() -> int:
    """Return the stacklevel that points a warning at the first frame outside lazyconn."""
    frame = inspect.currentframe()
    level = 0
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR) or "tests" in Path(filename).parts:
            break
        frame = frame.f_back
        level += 1
    return max(level, 1)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn, pointing at the caller of lazyconn."""
    # find_stack_level counts its own frame, which stands in for this one.
    warnings.warn(message, category, stacklevel=find_stack_level())


def check_in(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Raise ParameterError unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ParameterError(
            f"{name}={value!r} is not valid; expected one of {', '.join(map(repr, allowed))}."
        )
    return value


def check_type(name: str, value: Any, types: type | tuple[type, ...], expected: str) -> Any:
    """Raise ParameterTypeError unless ``value`` is an instance of ``types``."""
    if not isinstance(value, types):
        raise ParameterTypeError(
            f"{name}={value!r} has type {type(value).__name__}; expected {expected}."
        )
    return value


def check_positive(name: str, value: Any, *, allow_none: bool = False, strict: bool = True):
    """Raise ParameterError unless ``value`` is a finite number > 0 (>= 0 if not strict)."""
    if value is None and allow_none:
        return value
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        ok = bool(np.isfinite(value)) and (value > 0 if strict else value >= 0)
    if not ok:
        bound = "> 0" if strict else ">= 0"
        raise ParameterError(f"{name}={value!r} is not valid; expected a finite number {bound}.")
    return value


def is_path_like(obj: Any) -> bool:
    """True for str and os.PathLike (paths and URLs)."""
    return isinstance(obj, (str, os.PathLike))
