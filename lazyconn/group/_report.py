"""Progress display and stage timings of a group run."""

from __future__ import annotations

import sys
import time


class SubjectProgress:
    """A one-line text progress bar of finished subjects, written to ``stream`` (stderr).

    Parameters
    ----------
    total : int
        Subjects to compute (cached ones are not counted).
    enabled : bool
        False: print nothing.
    """

    def __init__(self, total: int, *, enabled: bool = True, stream=None, width: int = 30):
        self.total = total
        self.enabled = enabled and total > 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self.failed = 0
        self._start = time.perf_counter()
        if self.enabled:
            self._draw()

    def update(self, *, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        if self.enabled:
            self._draw()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def _draw(self) -> None:
        filled = int(self.width * self.done / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self._start
        failed = f", {self.failed} failed" if self.failed else ""
        self.stream.write(
            f"\r[lazyconn] subjects [{bar}] {self.done}/{self.total}{failed} | {elapsed:5.1f} s"
        )
        self.stream.flush()


class StageTimer:
    """Wall-clock seconds per named stage, in order (``with timer("compute"): ...``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def __call__(self, name: str):
        return _Stage(self, name)

    def total(self) -> float:
        return time.perf_counter() - self._t0


class _Stage:
    def __init__(self, timer: StageTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self._t
        self.timer.seconds[self.name] = self.timer.seconds.get(self.name, 0.0) + elapsed
        return False
