"""Stage timings of a group run (progress is shown by :mod:`lazyconn._progress`)."""

from __future__ import annotations

import time


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
