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


def signals_per_run(masker_cls, study, **masker_kwargs):
    """``masker_cls(**masker_kwargs)``'s signals of each run of ``study`` (``(paths,
    confounds)``, as :func:`lazyconn.testing.group.tiny_study` returns), one fresh masker per
    run: the subject loop a group run is compared with (``masker_cls``: nilearn's masker)."""
    paths, confounds = study
    return [
        masker_cls(**masker_kwargs).fit_transform(path, confounds=conf)
        for path, conf in zip(paths, confounds, strict=True)
    ]
