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


def nilearn_spheres_signals(study, **masker_kwargs):
    """nilearn's ``NiftiSpheresMasker(**masker_kwargs)`` signals of each run of ``study``
    (``(paths, confounds)``, as :func:`lazyconn.testing.group.tiny_study` returns): the
    reference a group run is compared with."""
    from nilearn.maskers import NiftiSpheresMasker

    paths, confounds = study
    return [
        NiftiSpheresMasker(**masker_kwargs).fit_transform(path, confounds=conf)
        for path, conf in zip(paths, confounds, strict=True)
    ]
