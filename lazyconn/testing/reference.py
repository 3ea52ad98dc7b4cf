"""Calling a reference implementation (nilearn, scipy) in a parity test."""

from __future__ import annotations

import warnings


def quiet(func, *args, **kwargs):
    """Return ``func(*args, **kwargs)`` with every warning it emits silenced.

    For the reference side of a comparison: nilearn's deprecation and resampling warnings are
    not what the test checks, and the suite turns lazyconn warnings into errors.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)
