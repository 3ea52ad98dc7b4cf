"""Calling a reference implementation (nilearn, scipy) in a parity test."""

from __future__ import annotations

import warnings

import numpy as np


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


def assert_smoothing_close(actual, expected, factor: float = 8.0):
    """``actual`` equals a scipy/nilearn Gaussian smoothing ``expected`` within rounding.

    lazyconn smooths by BLAS products in the data's dtype (``ops.spatial.gaussian_block``),
    scipy sums each line in float64 and rounds once per pass: measured, float32 results are
    within ~4 ulps of the data's magnitude of the exact ones. Hence the tolerance: ``factor``
    machine epsilons of the coarser float dtype, relative to each value and to the largest magnitude (so
    float64 data are held to ~1e-15).
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    floats = [a.dtype for a in (actual, expected) if a.dtype.kind == "f"]
    eps = max((np.finfo(d).eps for d in floats), default=np.finfo(np.float32).eps)
    finite = expected[np.isfinite(expected)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=factor * eps, atol=factor * eps * scale, equal_nan=True
    )


def smoothed_in_mask(x, mask, sigmas, truncate: float = 4.0) -> np.ndarray:
    """scipy's Gaussian smoothing of each volume of a 4-D ``x`` at the ``mask``'s voxels,
    (T, V) in float64: the reference of a smoothed masking. NaN and inf are read as 0
    first, as nilearn's smoothing does."""
    from scipy import ndimage

    finite = np.where(np.isfinite(x), x, 0).astype(np.float64)
    volumes = [
        ndimage.gaussian_filter(finite[..., t], sigmas, truncate=truncate)
        for t in range(x.shape[3])
    ]
    return np.stack(volumes, axis=-1)[mask].T
