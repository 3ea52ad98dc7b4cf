"""Shared validators and small helpers used by every layer."""

from __future__ import annotations

import contextlib
import inspect
import numbers
import os
import threading
import warnings
from collections.abc import Callable, Iterable
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


def dask_scheduler():
    """``scheduler=`` for ``dask.compute``: the one dask would pick now, found without
    importing ``distributed``, or None (dask decides) once ``distributed`` is imported.

    dask's own lookup imports ``distributed`` (~180 modules, ~0.3-0.6 s, ~10 MiB) at the
    first compute, even for ``scheduler="threads"``, only to look for a Client; a Client
    cannot exist before ``distributed`` is imported, so until then the answer is dask's
    config: a callable, a named local scheduler, or (nothing set) the threads, the default
    of the dask arrays and delayed objects lazyconn computes. Anything else (e.g.
    ``"distributed"`` without a Client, an executor) is left to dask and its messages.
    """
    import sys

    if "distributed" in sys.modules:
        return None
    import dask
    from dask.base import named_schedulers

    chosen = dask.config.get("scheduler", None)
    if chosen is None:
        return named_schedulers["threads"]
    if callable(chosen):
        return chosen
    if isinstance(chosen, str):
        return named_schedulers.get(chosen.lower())
    return None


def rechunk(x, chunks):
    """``x.rechunk(chunks)`` (a dask array) by :func:`rechunk_method`: lazyconn's one way to
    rechunk, so that no graph imports ``distributed`` just to choose how to move its values.

    Parameters
    ----------
    x : dask.array.Array
    chunks : anything ``dask.array.Array.rechunk`` takes (tuple, dict, -1...)
    """
    return x.rechunk(chunks, method=rechunk_method())


def rechunk_method():
    """``method=`` for ``dask.array.rechunk``: the one dask would pick now, found without
    importing ``distributed``, or None (dask decides) once ``distributed`` is imported or
    dask's config names one.

    dask's choice imports ``distributed`` (~0.3 s) to look for a Client, for which it may
    pick ``"p2p"``; a Client cannot exist before ``distributed`` is imported, so until then
    its answer is ``"tasks"``. The values are the same either way (a rechunk moves them).
    """
    import sys

    import dask

    if "distributed" in sys.modules or dask.config.get("array.rechunk.method", None):
        return None
    return "tasks"


class ProcessWide:
    """A process-wide setting held while any thread is inside: the first entry applies it
    (``make()``: a context manager, entered at once), the last exit restores what was
    there before.

    The settings it holds are global to the process (OpenBLAS's thread count, dask's
    config), so a save and restore per task raced when tasks overlapped on dask's threads:
    task A's exit restored 2 BLAS threads (or the threaded scheduler) while task B still
    ran, and B's exit could leave 1 thread (or "sync") set after the run. threadpoolctl
    (3.8) also lets only one thread at a time set OpenBLAS's (pthreads) thread count and
    silently ignores the others, so a limit must be set by one thread for all the tasks:
    the group engine's ``run_group`` sets it once in the thread that starts the compute
    (tasks in other processes, e.g. a cluster's workers, set it per process on the first
    task's thread).
    """

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._lock = threading.Lock()
        self._users = 0
        self._held = None

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                held = self._make()
                held.__enter__()  # threadpoolctl counts its users there
                self._held = held
            self._users += 1
        return self

    def __exit__(self, *exc_info):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                held, self._held = self._held, None
                held.__exit__(None, None, None)
        return False


@contextlib.contextmanager
def _resolved_scheduler():
    """dask's config names the scheduler that dask would pick now (:func:`dask_scheduler`)
    while inside; on exit the config is put back unless someone changed it meanwhile (e.g.
    a ``Client`` made the default in another thread: theirs stays)."""
    import dask

    chosen = dask_scheduler()
    if chosen is None or chosen is dask.config.get("scheduler", None):
        yield
        return
    setting = dask.config.set(scheduler=chosen)
    try:
        yield
    finally:
        if dask.config.get("scheduler", None) is chosen:
            setting.__exit__(None, None, None)


#: Held (process-wide, :class:`ProcessWide`) by lazyconn's computing entry points (a
#: masker's fit and transform, a decomposition's fit, a group run): every compute inside,
#: in any of its threads, then finds the scheduler without importing ``distributed``.
#: The same scheduler as dask's own lookup, so other threads see no change.
LOCAL_SCHEDULER = ProcessWide(_resolved_scheduler)


async def import_modules(modules: list[str]) -> None:
    """Import ``modules`` in a thread, skipping any that fails (a coroutine, for
    ``distributed.Client.run``/``run_on_scheduler``: the event loop of the worker or
    scheduler that awaits it keeps serving meanwhile; this module is cheap to unpickle)."""
    import asyncio
    import contextlib
    import importlib

    def load():
        for module in modules:
            with contextlib.suppress(Exception):  # the run itself will report it
                importlib.import_module(module)

    await asyncio.to_thread(load)
