"""Shared validators and small helpers used by every layer."""

from __future__ import annotations

import inspect
import numbers
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lazyconn.exceptions import NotFittedError, ParameterError, ParameterTypeError

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


def _bounds_text(kind, low, high, low_inclusive, high_inclusive):
    if low is not None and high is not None:
        return f"{kind} in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"{kind} {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"{kind} {'<=' if high_inclusive else '<'} {high}"
    return kind


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
    expected: str | None = None,
    type_error: type[Exception] = ParameterError,
) -> int | None:
    """Return ``value`` as an int, or raise unless it is an integer in ``[low, high]``.

    Parameters
    ----------
    name : str
        Parameter name, for the message.
    value : object
        bool is not an integer here; numpy integers are.
    low, high : int, optional
        Inclusive bounds.
    allow_none : bool, default=False
        Accept (and return) None.
    expected : str, optional
        What was expected, for the message (default e.g. "an int >= 1").
    type_error : exception class, default=ParameterError
        Raised for a value that is not an integer (``ParameterTypeError`` where the caller
        reports types as TypeError); values out of range raise ParameterError.

    Returns
    -------
    int or None
    """
    if value is None and allow_none:
        return None
    if expected is None:
        expected = ("None or " if allow_none else "") + _bounds_text("an int", low, high, 1, 1)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if type_error is ParameterError:
            raise ParameterError(f"{name}={value!r} is not valid; expected {expected}.")
        raise type_error(f"{name}={value!r} has type {type(value).__name__}; expected {expected}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(f"{name}={value!r} is not valid; expected {expected}.")
    return int(value)


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_none: bool = False,
    expected: str | None = None,
) -> float | None:
    """Return ``value`` as a float, or raise ParameterError unless it is a finite real number
    within the bounds.

    Parameters
    ----------
    name : str
        Parameter name, for the message.
    value : object
        bool is not a number here; numpy numbers are; NaN and inf are refused.
    low, high : float, optional
        Bounds.
    low_inclusive, high_inclusive : bool, default=True
        Whether the bounds themselves are accepted.
    allow_none : bool, default=False
        Accept (and return) None.
    expected : str, optional
        What was expected, for the message (default e.g. "a finite number > 0").

    Returns
    -------
    float or None
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = (low is None or (value >= low if low_inclusive else value > low)) and (
            high is None or (value <= high if high_inclusive else value < high)
        )
    if not ok:
        if expected is None:
            expected = ("None or " if allow_none else "") + _bounds_text(
                "a finite number", low, high, low_inclusive, high_inclusive
            )
        raise ParameterError(f"{name}={value!r} is not valid; expected {expected}.")
    return float(value)


def check_positive(name: str, value: Any, *, allow_none: bool = False, strict: bool = True):
    """Raise ParameterError unless ``value`` is a finite number > 0 (>= 0 if not strict).

    Returns ``value`` unchanged (not converted to float).
    """
    check_real(
        name,
        value,
        low=0,
        low_inclusive=not strict,
        allow_none=allow_none,
        expected=f"a finite number {'>' if strict else '>='} 0",
    )
    return value


def is_path_like(obj: Any) -> bool:
    """True for str and os.PathLike (paths and URLs)."""
    return isinstance(obj, (str, os.PathLike))


def check_fitted(estimator) -> None:
    """Raise nilearn's/scikit-learn's NotFittedError unless ``estimator.__sklearn_is_fitted__()``."""
    if not estimator.__sklearn_is_fitted__():
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )
