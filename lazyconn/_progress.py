"""Progress displays on stderr: one redrawn line on a terminal, plain lines otherwise.

Every long operation of lazyconn (conversion, batched writes, group runs) reports through
:class:`Progress`, so progress always goes to stderr (stdout stays for results) and a log
file or a CI console never receives carriage returns: when the stream is not a terminal,
progress is written as whole lines, at most one per ``step_percent`` of the work.
"""

from __future__ import annotations

import os
import sys
import time


def is_terminal(stream) -> bool:
    """True when ``stream`` is an interactive terminal (a redrawn line is readable there)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


class Progress:
    """Progress of ``total`` steps, written to ``stream`` (default: ``sys.stderr``).

    Parameters
    ----------
    label : str
        What is counted, e.g. ``"subjects"`` or ``"convert: tasks"``.
    total : int
        Number of steps. Nothing is shown when it is 0.
    enabled : bool, default=True
        False: write nothing.
    stream : file, optional
        Default ``sys.stderr`` (looked up at creation, so pytest's capture sees it).
    width : int, default=30
        Characters of the bar on a terminal.
    step_percent : int, default=10
        When the stream is not a terminal, a line is written each time another
        ``step_percent`` % of the work is done (and at the end).
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        enabled: bool = True,
        stream=None,
        width: int = 30,
        step_percent: int = 10,
    ):
        self.label = label
        self.total = int(total)
        self.enabled = bool(enabled) and self.total > 0
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = is_terminal(self.stream)
        self.width = width
        self.step_percent = step_percent
        self.done = 0
        self.failed = 0
        self._last_step = -1
        self._start = time.perf_counter()
        if self.enabled:
            self._draw()

    def update(self, n: int = 1, *, failed: bool = False) -> None:
        """``n`` more steps are done (``failed``: they count as failures)."""
        self.done = min(self.total, self.done + n)
        self.failed += n if failed else 0
        if self.enabled:
            self._draw()

    def note(self, text: str) -> None:
        """A line of information above the bar (e.g. the dask dashboard's address)."""
        if self.enabled:
            self.stream.write(f"{chr(13) if self.terminal else ''}[lazyconn] {text}\n")
            self.stream.flush()
            if self.terminal:
                self._draw()

    def close(self) -> None:
        """End the display (a final newline on a terminal). Safe to call twice."""
        if not self.enabled:
            return
        if self.terminal:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        elif self._last_step < 100 // self.step_percent:
            self._line()  # the final state, when the last step did not write it
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _text(self) -> str:
        elapsed = time.perf_counter() - self._start
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done}/{self.total}{failed} | {elapsed:5.1f} s"

    def _line(self) -> None:
        percent = 100 * self.done // self.total
        self.stream.write(f"[lazyconn] {self.label} {percent:3d}% {self._text()}\n")
        self.stream.flush()

    def _draw(self) -> None:
        if self.terminal:
            filled = self.width * self.done // self.total
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[lazyconn] {self.label} [{bar}] {self._text()}")
            self.stream.flush()
            return
        step = (100 * self.done // self.total) // self.step_percent
        if step > self._last_step:
            self._last_step = step
            self._line()


def log_step(who: str, message: str, *, stream=None) -> None:
    """A ``verbose`` step message in nilearn's form, ``[Class.method] message``, on its own
    line of ``stream`` (default ``sys.stderr``, looked up at call time: stdout stays for
    results; nilearn prints these on stdout)."""
    stream = stream if stream is not None else sys.stderr
    stream.write(f"[{who}] {message}\n")
    stream.flush()


def describe_imgs(imgs) -> str:
    """How a step message names its images: a path as given, an image by its repr, a list by
    its first and last items (and its length) beyond three."""
    if isinstance(imgs, (list, tuple)):
        items = [describe_imgs(img) for img in imgs]
        if len(items) > 3:
            items = [items[0], f"... ({len(items)} items)", items[-1]]
        return "[" + ", ".join(items) + "]"
    if isinstance(imgs, (str, os.PathLike)):
        return str(imgs)
    return repr(imgs)


def dask_progress(label: str, *, enabled: bool = True, stream=None):
    """A dask local-scheduler callback showing :class:`Progress` of the graph's tasks.

    Use as ``with dask_progress("convert: tasks"): dask.compute(...)``. Unlike
    ``dask.diagnostics.ProgressBar`` it writes to stderr and never writes ``\\r`` to a
    stream that is not a terminal.
    """
    from dask.callbacks import Callback

    class _TaskProgress(Callback):
        def __init__(self):
            super().__init__()
            self.bar = None

        def _start_state(self, dsk, state):
            total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
            self.bar = Progress(label, total, enabled=enabled, stream=stream)

        def _posttask(self, key, result, dsk, state, worker_id):
            if self.bar is not None:
                self.bar.update()

        def _finish(self, dsk, state, errored):
            if self.bar is not None:
                self.bar.close()

    return _TaskProgress()


def futures_progress(label: str, futures, *, enabled: bool = True, stream=None) -> None:
    """Wait for distributed ``futures``, showing :class:`Progress` as they finish.

    Errors are not raised here (gather the futures afterwards).
    """
    from distributed import as_completed

    with Progress(label, len(futures), enabled=enabled, stream=stream) as bar:
        for future in as_completed(futures):
            bar.update(failed=future.status == "error")


__all__ = [
    "Progress",
    "dask_progress",
    "describe_imgs",
    "futures_progress",
    "is_terminal",
    "log_step",
]
