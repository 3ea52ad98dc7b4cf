"""Per-subject building blocks of :class:`ConnectivityMeasure`, for group pipelines.

``ConnectivityMeasure.fit`` / ``transform`` are written with these functions, so a pipeline
that calls them on dask / dask.distributed workers gets the same numbers as
``ConnectivityMeasure().fit_transform`` (and nilearn's) without re-implementing the maths.
Everything here is a module-level function on numpy arrays: picklable, no hidden state.

The flow, for a list of per-subject region signals ``ts`` (each (n_samples, n_features)):

1. map: ``cov = subject_covariance(ts, cov_estimator, standardize=...)`` per subject
   (or the bound method ``ConnectivityMeasure(...).subject_covariance(ts)``, which applies
   nilearn's rule for ``standardize``);
2. reduce, ``kind != "tangent"``: the group matrix ``mean_`` is the arithmetic mean of the
   subject matrices ``subject_connectivity(cov, kind)``; reduce them with
   ``partial_sum(batch)`` per batch and ``combine([...])`` in a tree, in any grouping or order,
   then ``finalize_mean(total)`` (or ``ConnectivityMeasure.fit_from_partial(total)``);
   ``kind == "tangent"``: gather the (small, n_features x n_features) covariances and call
   ``tangent_mean(covs)`` -> ``(mean_, whitening_)`` (or
   ``ConnectivityMeasure.fit_from_covariances(covs)``); the geometric mean is iterative and
   needs every covariance at each step;
3. map: per-subject outputs ``subject_connectivity(cov, kind, whitening=whitening_)``
   (or the fitted ``ConnectivityMeasure.subject_transform(cov)``, which also vectorizes);
   second-level ``confounds`` then need all subject vectors: ``clean_vectors(vectors,
   confounds)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce

import numpy as np
from scipy import linalg
from sklearn.base import clone
from sklearn.covariance import LedoitWolf

from lazyconn._utils import check_in, warn
from lazyconn.connectome._linalg import (
    _check_spd,
    _geometric_mean,
    _inv_sqrt,
    _map_eigenvalues,
    cov_to_corr,
    is_spd,
    prec_to_partial,
)
from lazyconn.exceptions import DimensionError, ParameterError
from lazyconn.ops.temporal import zscore_sample
from lazyconn.signal import clean

#: The kinds of ConnectivityMeasure, in the order nilearn lists them in its error message.
KINDS = ("correlation", "partial correlation", "tangent", "covariance", "precision")

#: ConnectivityMeasure's ``max_iter`` for the geometric mean (nilearn's ``fit``).
TANGENT_MAX_ITER = 30
TANGENT_TOL = 1e-7

_SHRINKAGE_HINT = (
    " Use a shrinkage estimator such as LedoitWolf (the default cov_estimator) or more time "
    "points than regions."
)


def default_cov_estimator():
    """nilearn's default covariance estimator: ``LedoitWolf(store_precision=False)``."""
    return LedoitWolf(store_precision=False)


def _is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def check_time_series(time_series, name: str = "time_series", n_features: int | None = None):
    """Validate one subject's region signals and return them as a numpy array.

    Accepts a 2-D numpy array (n_samples, n_features), as nilearn, or a 2-D dask array
    (computed here). Raises ParameterError for other types (a ValueError, as nilearn),
    DimensionError for a wrong number of dimensions or of features, ParameterError for
    empty or non-finite signals.
    """
    if _is_sparse(time_series):
        raise ParameterError(
            f"{name} is a {type(time_series).__name__}: sparse input is not supported; "
            "expected a dense 2-D numpy array of shape (n_samples, n_features)."
        )
    if not isinstance(time_series, np.ndarray) and not _is_dask(time_series):
        raise ParameterError(
            f"{name} has type {type(time_series).__name__}; expected a 2-D numpy array of "
            "shape (n_samples, n_features), one per subject."
        )
    if time_series.ndim != 2:
        hint = (
            " Reshape your data with ts[:, None] for one region." if time_series.ndim == 1 else ""
        )
        raise DimensionError(
            f"{name} has shape {time_series.shape} ({time_series.ndim}-D); expected a 2-D "
            f"array of shape (n_samples, n_features).{hint}"
        )
    if n_features is not None and time_series.shape[1] != n_features:
        raise DimensionError(
            f"{name} has {time_series.shape[1]} features, but ConnectivityMeasure is "
            f"expecting {n_features} features as input."
        )
    time_series = np.asarray(time_series)
    for axis, what in enumerate(("sample", "feature")):
        if time_series.shape[axis] < 1:
            raise ParameterError(
                f"{name} has 0 {what}(s) (shape={time_series.shape}) while a minimum of 1 is "
                "required."
            )
    if time_series.dtype.kind == "c":
        raise ParameterError(
            f"{name} has dtype {time_series.dtype}: Complex data not supported; expected real "
            "numbers."
        )
    if time_series.dtype.kind not in "biuf":
        raise ParameterError(
            f"{name} has dtype {time_series.dtype}; expected real numbers (float or int)."
        )
    if not np.isfinite(time_series).all():
        raise ParameterError(
            f"{name} contains NaN or infinity; expected finite values (nilearn raises "
            "'Input contains NaN'). Clean or drop those samples first."
        )
    return time_series


def _is_sparse(x) -> bool:
    return type(x).__module__.startswith("scipy.sparse")


def subject_covariance(time_series, cov_estimator=None, *, standardize: bool = False):
    """One subject's covariance matrix, as ``ConnectivityMeasure`` estimates it.

    Parameters
    ----------
    time_series : numpy.ndarray or dask array (n_samples, n_features)
        The subject's region signals.
    cov_estimator : scikit-learn covariance estimator or None, default=None
        Cloned before fitting (the argument is never modified, so one estimator can be
        shared by parallel tasks). None means ``LedoitWolf(store_precision=False)``.
    standardize : bool, default=False
        Z-score each column (mean 0, ddof=1 std; constant columns left at 0) before
        estimating. ``ConnectivityMeasure`` does this only for ``kind="correlation"`` with
        ``standardize=True`` (nilearn's rule); its method ``subject_covariance`` applies it.

    Returns
    -------
    numpy.ndarray (n_features, n_features)
        The estimator's ``covariance_``.
    """
    time_series = check_time_series(time_series)
    if cov_estimator is None:
        estimator = default_cov_estimator()
    else:
        check_cov_estimator(cov_estimator)
        estimator = clone(cov_estimator)
    if standardize:
        if time_series.shape[0] == 1:
            warn(
                "Standardization of 3D signal has been requested but would lead to zero "
                "values. Skipping.",
                UserWarning,
            )
        time_series = zscore_sample(time_series)
    estimator.fit(time_series)
    covariance = getattr(estimator, "covariance_", None)
    n_features = time_series.shape[1]
    if covariance is None or np.shape(covariance) != (n_features, n_features):
        raise ParameterError(
            f"cov_estimator={cov_estimator!r} produced covariance_ of shape "
            f"{np.shape(covariance) if covariance is not None else None}; expected an "
            f"attribute covariance_ of shape {(n_features, n_features)} after fit."
        )
    return np.asarray(covariance)


def check_cov_estimator(cov_estimator) -> None:
    """Raise ParameterError unless ``cov_estimator`` has a ``fit`` method (as nilearn)."""
    if not hasattr(cov_estimator, "fit"):
        raise ParameterError(
            f"cov_estimator={cov_estimator!r} is not valid; expected an estimator with "
            "'.fit()' and '.covariance_' (e.g., from `sklearn.covariance` or a custom "
            f"estimator constructed similarly). Got: `{type(cov_estimator).__name__}`."
        )


def _check_covariance(covariance, name: str) -> np.ndarray:
    covariance = np.asarray(covariance)
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1]:
        raise DimensionError(
            f"{name} has shape {covariance.shape}; expected a square 2-D matrix "
            "(n_features, n_features)."
        )
    return covariance


def _inv(covariance: np.ndarray, name: str, kind: str) -> np.ndarray:
    try:
        return linalg.inv(covariance)
    except linalg.LinAlgError:
        raise ParameterError(
            f"{name} is singular (not invertible); kind={kind!r} inverts the covariance, so it "
            f"expected an invertible (positive definite) matrix.{_SHRINKAGE_HINT}"
        ) from None


def subject_connectivity(
    covariance, kind: str = "covariance", *, whitening=None, name: str = "covariance"
):
    """One subject's connectivity matrix of ``kind``, from its covariance.

    Parameters
    ----------
    covariance : numpy.ndarray (n_features, n_features)
        From :func:`subject_covariance` (for ``"correlation"`` with nilearn's
        ``standardize=True``, the covariance of the z-scored signals).
    kind : {"covariance", "correlation", "partial correlation", "tangent", "precision"}
    whitening : numpy.ndarray (n_features, n_features) or None
        Required for ``"tangent"``: the group's ``mean_ ** -1/2``
        (``ConnectivityMeasure.whitening_``, or the second output of :func:`tangent_mean`).
    name : str, default="covariance"
        How error messages name the matrix (e.g. ``"covariance of subject 3"``).

    Returns
    -------
    numpy.ndarray (n_features, n_features)
        covariance (as is), correlation (``cov_to_corr``), precision (``inv``), partial
        correlation (``prec_to_partial(inv)``) or the tangent vector ``logm(W C W)``.

    Raises
    ------
    ParameterError
        Unknown ``kind``; a singular covariance for precision / partial correlation (instead
        of scipy's LinAlgError); for tangent, a missing ``whitening`` or a covariance that is
        not symmetric positive definite (nilearn would return NaNs there).
    """
    check_in("kind", kind, KINDS)
    covariance = _check_covariance(covariance, name)
    if kind == "covariance":
        return covariance
    if kind == "correlation":
        return cov_to_corr(covariance)
    if kind == "precision":
        return _inv(covariance, name, kind)
    if kind == "partial correlation":
        return prec_to_partial(_inv(covariance, name, kind))
    if whitening is None:
        raise ParameterError(
            "whitening=None is not valid for kind='tangent'; expected the group's "
            "mean ** -1/2 (ConnectivityMeasure.whitening_ or tangent_mean(...)[1])."
        )
    whitening = np.asarray(whitening)
    if whitening.shape != covariance.shape:
        raise DimensionError(
            f"whitening has shape {whitening.shape}; expected {covariance.shape}, the shape "
            f"of {name}."
        )
    _check_spd(covariance, name, f" kind='tangent' takes its matrix logarithm.{_SHRINKAGE_HINT}")
    return _map_eigenvalues(np.log, whitening.dot(covariance).dot(whitening))


def partial_sum(matrices) -> tuple[np.ndarray, int]:
    """``(sum, count)`` of a batch of subject matrices (first step of a tree reduction).

    The sum keeps the matrices' dtype, as ``np.mean`` does in nilearn. Sums of different
    batches are merged by :func:`combine`, in any grouping or order; :func:`finalize_mean`
    turns the total into ``ConnectivityMeasure.mean_``.

    Parameters
    ----------
    matrices : (n_subjects, n, n) array, a list of (n, n) arrays, or one (n, n) array
        Subject matrices (``ConnectivityMeasure`` outputs, not vectorized).

    Returns
    -------
    (sum, count) : (numpy.ndarray, int)
    """
    stack = np.asarray(list(matrices) if not isinstance(matrices, np.ndarray) else matrices)
    if stack.ndim == 2:  # a single matrix
        stack = stack[np.newaxis]
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2] or stack.shape[0] == 0:
        raise DimensionError(
            f"matrices have shape {stack.shape}; expected one or more square matrices "
            "(n_matrices, n_features, n_features)."
        )
    return stack.sum(axis=0), int(stack.shape[0])


def combine(partials: Iterable[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """Merge ``(sum, count)`` pairs from :func:`partial_sum` (or earlier ``combine`` calls).

    Takes one iterable of pairs (the signature of dask's ``combine``/``aggregate`` callbacks).

    Parameters
    ----------
    partials : iterable of (numpy.ndarray, int)
        ``(sum, count)`` pairs of matrices of one shape.

    Returns
    -------
    (sum, count) : (numpy.ndarray, int)
    """
    partials = list(partials)
    if not partials:
        raise ParameterError("partials=[] is empty; expected at least one (sum, count) pair.")
    shapes = {np.shape(total) for total, _ in partials}
    if len(shapes) > 1:
        raise DimensionError(
            f"partials have sums of different shapes {sorted(shapes)}; expected one "
            "(n_features, n_features) shape (all subjects must have the same regions)."
        )
    return reduce(lambda a, b: (a[0] + b[0], a[1] + b[1]), partials)


def finalize_mean(partial: tuple[np.ndarray, int]) -> np.ndarray:
    """The group matrix ``mean_`` from a total ``(sum, count)``: mean, then symmetrised.

    Parameters
    ----------
    partial : (numpy.ndarray, int)
        The total ``(sum, count)`` of :func:`combine` (or :func:`partial_sum`).

    Returns
    -------
    numpy.ndarray
    """
    total, count = partial
    if count < 1:
        raise ParameterError(f"count={count!r} is not valid; expected at least 1 subject.")
    mean = np.asarray(total) / count
    # Fight numerical asymmetry, as nilearn.
    mean = mean + mean.T
    mean *= 0.5
    return mean


def tangent_mean(covariances, *, max_iter: int = TANGENT_MAX_ITER, tol: float = TANGENT_TOL):
    """``(mean_, whitening_)`` of ``kind="tangent"``: geometric mean of the covariances.

    Parameters
    ----------
    covariances : list of numpy.ndarray (n_features, n_features)
        Every subject's covariance (gathered: each iteration needs all of them).
    max_iter, tol
        As ``ConnectivityMeasure.fit`` (30 and 1e-7).

    Returns
    -------
    mean : numpy.ndarray
        The geometric mean (``ConnectivityMeasure.mean_``).
    whitening : numpy.ndarray
        ``mean ** -1/2`` (``ConnectivityMeasure.whitening_``).

    Raises
    ------
    ParameterError
        A covariance is not symmetric positive definite; the message names the subject.
    """
    covariances = [
        _check_covariance(cov, f"covariance of subject {index}")
        for index, cov in enumerate(covariances)
    ]
    for index, cov in enumerate(covariances):
        if cov.shape == covariances[0].shape and not is_spd(cov):
            _check_spd(
                cov,
                f"the covariance of subject {index}",
                f" kind='tangent' needs positive definite covariances.{_SHRINKAGE_HINT}",
            )
    mean = _geometric_mean(covariances, max_iter=max_iter, tol=tol)
    return mean, _map_eigenvalues(_inv_sqrt, mean)


def clean_vectors(vectors, confounds):
    """Second-level cleaning of vectorized connectivities, as nilearn's transform does.

    nilearn calls ``signal.clean(vectors, confounds=confounds)`` with clean's defaults, and
    so does this (:func:`lazyconn.signal.clean`): linear detrend across subjects (of vectors
    and confounds), z-scored confounds regressed out (pivoted QR), then each coefficient
    z-scored across subjects (ddof=1).

    Parameters
    ----------
    vectors : numpy.ndarray (n_subjects, n_coefficients)
    confounds : numpy.ndarray (n_subjects,) or (n_subjects, n_confounds), pandas
        DataFrame, CSV/TSV path, or a list of those (stacked as columns)

    Returns
    -------
    numpy.ndarray (n_subjects, n_coefficients)
    """
    vectors = np.asarray(vectors)
    entries = confounds if isinstance(confounds, (list, tuple)) else [confounds]
    for entry in entries:
        # clean would say "time points"; here rows are subjects.
        if hasattr(entry, "shape") and len(entry.shape) >= 1 and entry.shape[0] != len(vectors):
            raise DimensionError(
                f"confounds has {entry.shape[0]} rows; expected one row per subject "
                f"({len(vectors)})."
            )
    return clean(vectors, confounds=confounds)
