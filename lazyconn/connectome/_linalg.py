"""Matrix helpers of nilearn's ``connectome`` module, reproduced operation by operation.

Every function follows nilearn 0.14.1 (``nilearn/connectome/connectivity_matrices.py``) step
for step, so results agree to rounding and dtypes follow the same numpy rules. The vector /
matrix conversions also accept dask arrays (they are written with integer ``take`` instead of
boolean masks) and then stay lazy.
"""

from __future__ import annotations

from math import isqrt, sqrt

import numpy as np
from scipy import linalg

from lazyconn._utils import warn
from lazyconn.exceptions import DimensionError, ParameterError

#: Symmetry tolerance of nilearn's SPD check (``is_spd(M, decimal=7)``).
_SPD_RTOL = 1e-7


def _as_array(x):
    """numpy or dask arrays pass through; lists become numpy arrays."""
    if hasattr(x, "shape") and hasattr(x, "ndim") and hasattr(x, "dtype"):
        return x
    return np.asarray(x)


def _check_square(matrix, name: str = "matrix") -> None:
    """Raise DimensionError unless ``matrix`` is a square 2-D array."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DimensionError(
            f"{name} has shape {matrix.shape}; expected a square 2-D matrix "
            "(n_features, n_features)."
        )


def is_spd(matrix: np.ndarray, rtol: float = _SPD_RTOL) -> bool:
    """True if ``matrix`` is symmetric (to ``rtol``) with a positive smallest eigenvalue.

    Same test as nilearn's ``_utils.extmath.is_spd(M, decimal=7)``.

    Parameters
    ----------
    matrix : (n, n) numpy.ndarray
        The matrix to test.
    rtol : float
        Relative tolerance of the symmetry test (``np.allclose(M, M.T, atol=0, rtol=rtol)``).

    Returns
    -------
    bool
    """
    if not np.allclose(matrix, matrix.T, atol=0, rtol=rtol):
        return False
    return bool(np.linalg.eigvalsh(matrix).min() > 0)


def _check_spd(matrix: np.ndarray, name: str = "matrix", hint: str = "") -> None:
    """Raise ParameterError (a ValueError, like nilearn) unless ``matrix`` is SPD."""
    if is_spd(matrix):
        return
    if not np.allclose(matrix, matrix.T, atol=0, rtol=_SPD_RTOL):
        problem = "it is not symmetric (relative tolerance 1e-7)"
    else:
        problem = f"its smallest eigenvalue is {np.linalg.eigvalsh(matrix).min():.3g}"
    raise ParameterError(
        f"Expected a symmetric positive definite matrix for {name}, but {problem}.{hint}"
    )


def _form_symmetric(function, eigenvalues, eigenvectors) -> np.ndarray:
    """``U diag(function(eigenvalues)) U^T``."""
    return np.dot(eigenvectors * function(eigenvalues), eigenvectors.T)


def _map_eigenvalues(function, symmetric) -> np.ndarray:
    """Apply ``function`` to the eigenvalues of a real symmetric matrix (``eigh``)."""
    eigenvalues, eigenvectors = linalg.eigh(symmetric)
    return _form_symmetric(function, eigenvalues, eigenvectors)


def _inv_sqrt(x):
    return 1.0 / np.sqrt(x)


def _geometric_mean(matrices, init=None, max_iter=10, tol=1e-7):
    """Geometric (Riemannian) mean of symmetric positive definite matrices.

    nilearn's ``connectome.connectivity_matrices._geometric_mean``, same signature and
    defaults: gradient descent from the arithmetic mean (or ``init``) along geodesics
    (Fletcher & Joshi 2007, algorithm 3), halving the step whenever the gradient norm grows;
    stops when ``||gradient||_F / n_features**2 < tol``. ``ConnectivityMeasure`` calls it with
    ``max_iter=30``.

    Parameters
    ----------
    matrices : list of numpy.ndarray, each (n_features, n_features)
        Symmetric positive definite matrices of one shape.
    init : numpy.ndarray (n_features, n_features) or None, default=None
        Starting point; the arithmetic mean if None.
    max_iter : int, default=10
        Maximum number of gradient steps.
    tol : float or None, default=1e-7
        Convergence tolerance; None runs all ``max_iter`` steps.

    Returns
    -------
    numpy.ndarray (n_features, n_features)

    Raises
    ------
    DimensionError
        A matrix (or ``init``) is not square or not of the common shape.
    ParameterError
        A matrix (or ``init``) is not symmetric positive definite (nilearn raises a
        ValueError with the same "Expected a symmetric positive definite matrix" text;
        lazyconn also names the offending matrix and its smallest eigenvalue).
    FloatingPointError
        NaN after a matrix logarithm (as nilearn).
    """
    if len(matrices) == 0:
        raise ParameterError("matrices=[] is empty; expected at least one matrix.")
    n_features = np.shape(matrices[0])[0]
    for index, matrix in enumerate(matrices):
        matrix = np.asarray(matrix)
        _check_square(matrix, f"matrices[{index}]")
        if matrix.shape[0] != n_features:
            raise DimensionError(
                f"matrices[{index}] has shape {matrix.shape}; expected every matrix to have "
                f"the shape of matrices[0], {(n_features, n_features)}."
            )
        _check_spd(matrix, f"matrices[{index}]")

    matrices = np.array(matrices)
    if init is None:
        gmean = np.mean(matrices, axis=0)
    else:
        init = np.asarray(init)
        _check_square(init, "init")
        if init.shape[0] != n_features:
            raise DimensionError(
                f"init has shape {init.shape}; expected {(n_features, n_features)}, the "
                "shape of the matrices."
            )
        _check_spd(init, "init")
        gmean = init

    norm_old = np.inf
    step = 1.0
    norm = np.inf
    for _ in range(max_iter):
        vals_gmean, vecs_gmean = linalg.eigh(gmean)
        gmean_inv_sqrt = _form_symmetric(np.sqrt, 1.0 / vals_gmean, vecs_gmean)
        whitened = [gmean_inv_sqrt.dot(matrix).dot(gmean_inv_sqrt) for matrix in matrices]
        logs = [_map_eigenvalues(np.log, w) for w in whitened]
        logs_mean = np.mean(logs, axis=0)
        if np.any(np.isnan(logs_mean)):
            raise FloatingPointError("Nan value after logarithm operation.")

        norm = np.linalg.norm(logs_mean)

        # Move along the geodesic (the update is applied even when the norm grew, as nilearn).
        vals_log, vecs_log = linalg.eigh(logs_mean)
        gmean_sqrt = _form_symmetric(np.sqrt, vals_gmean, vecs_gmean)
        gmean = gmean_sqrt.dot(_form_symmetric(np.exp, vals_log * step, vecs_log)).dot(gmean_sqrt)

        if norm < norm_old:
            norm_old = norm
        elif norm > norm_old:
            step = step / 2.0
            norm = norm_old
        if tol is not None and norm / gmean.size < tol:
            break
    if tol is not None and norm / gmean.size >= tol:
        warn(
            f"Maximum number of iterations {max_iter} reached without getting to the "
            f"requested tolerance level {tol}.",
            UserWarning,
        )
    return gmean


def _tril_indices_flat(n_features: int, discard_diagonal: bool) -> np.ndarray:
    """Flat (row-major) positions of the lower triangle, in nilearn's C order."""
    rows, cols = np.tril_indices(n_features, k=-1 if discard_diagonal else 0)
    return rows * n_features + cols


def sym_matrix_to_vec(symmetric, discard_diagonal: bool = False):
    """Flattened lower-triangular part of (a stack of) symmetric matrices.

    Same as :func:`nilearn.connectome.sym_matrix_to_vec`: entries (0,0), (1,0), (1,1),
    (2,0), ... with the diagonal divided by sqrt(2) (norm-preserving); with
    ``discard_diagonal=True`` the strictly-lower part, unscaled. Acts on the last two axes.
    Also accepts lists and dask arrays (the result is then lazy).

    Parameters
    ----------
    symmetric : array-like (..., n_features, n_features)
    discard_diagonal : bool, default=False

    Returns
    -------
    array (..., n_features * (n_features + 1) / 2) or (..., n_features * (n_features - 1) / 2)
    """
    symmetric = _as_array(symmetric)
    if symmetric.ndim < 2 or symmetric.shape[-1] != symmetric.shape[-2]:
        raise DimensionError(
            f"symmetric has shape {symmetric.shape}; expected square matrices in the last "
            "two axes (..., n_features, n_features)."
        )
    n_features = symmetric.shape[-1]
    flat = symmetric.reshape(*symmetric.shape[:-2], n_features * n_features)
    index = _tril_indices_flat(n_features, discard_diagonal)
    vec = flat[..., index]
    if discard_diagonal:
        return vec
    # float64 scaling array, as nilearn: float32 input gives a float64 vector.
    scaling = np.ones(n_features * n_features)
    scaling[:: n_features + 1] = sqrt(2.0)
    return vec / scaling[index]


def vec_to_sym_matrix(vec, diagonal=None):
    """Symmetric matrices from their flattened lower-triangular parts.

    Inverse of :func:`sym_matrix_to_vec`, as :func:`nilearn.connectome.vec_to_sym_matrix`:
    the diagonal, whether inside ``vec`` or given as ``diagonal``, is multiplied by sqrt(2)
    (pass ``diagonal / sqrt(2)`` to get ``diagonal`` back). Acts on the last axis; the result
    is float64 like nilearn's. Also accepts dask arrays (the result is then lazy).

    Parameters
    ----------
    vec : array-like (..., n * (n + 1) / 2), or (..., n * (n - 1) / 2) with ``diagonal``
    diagonal : array-like (..., n) or None, default=None

    Returns
    -------
    array (..., n, n)

    Raises
    ------
    DimensionError
        The length of ``vec`` is not triangular, or ``diagonal`` does not match it.
    """
    vec = _as_array(vec)
    if vec.ndim < 1:
        raise DimensionError(
            f"vec has shape {vec.shape}; expected at least one axis (..., n_values)."
        )
    n_values = vec.shape[-1]
    # Solve n (n + 1) / 2 = n_values exactly, in integers.
    root = isqrt(8 * n_values + 1)
    triangular = root * root == 8 * n_values + 1
    n_features = (root - 1) // 2 + (diagonal is not None)
    if not triangular:
        what = (
            "n * (n - 1) / 2 when diagonal is given"
            if diagonal is not None
            else ("n * (n + 1) / 2")
        )
        raise DimensionError(
            f"Vector of unsuitable shape {vec.shape} cannot be transformed to a symmetric "
            f"matrix: its last axis has length {n_values}; expected a triangular number "
            f"{what} (e.g. 1, 3, 6, 10, 15, ...)."
        )
    if diagonal is not None:
        diagonal = _as_array(diagonal)
        if tuple(diagonal.shape[:-1]) != tuple(vec.shape[:-1]) or (
            diagonal.shape[-1] != n_features
        ):
            raise DimensionError(
                f"diagonal of shape {diagonal.shape} incompatible with vector of shape "
                f"{vec.shape}; expected diagonal of shape "
                f"{(*vec.shape[:-1], n_features)}."
            )
        values = _concatenate([vec, diagonal])
        rows, cols = np.tril_indices(n_features, k=-1)
        position = np.empty((n_features, n_features), dtype=np.intp)
        position[rows, cols] = np.arange(rows.size)
        position[cols, rows] = np.arange(rows.size)
        position[np.diag_indices(n_features)] = n_values + np.arange(n_features)
    else:
        values = vec
        rows, cols = np.tril_indices(n_features)
        position = np.empty((n_features, n_features), dtype=np.intp)
        position[rows, cols] = np.arange(rows.size)
        position[cols, rows] = np.arange(rows.size)
    scaling = np.ones((n_features, n_features))
    np.fill_diagonal(scaling, sqrt(2.0))
    sym = values[..., position.ravel()].reshape(*vec.shape[:-1], n_features, n_features)
    # float64 scaling makes the result float64 for float32 input, as nilearn's np.zeros.
    return sym * scaling


def _concatenate(arrays):
    """np.concatenate or da.concatenate along the last axis, whichever fits the inputs."""
    if any(type(a).__module__.startswith("dask") for a in arrays):
        import dask.array as da

        return da.concatenate([da.asarray(a) for a in arrays], axis=-1)
    return np.concatenate([np.asarray(a) for a in arrays], axis=-1)


def cov_to_corr(covariance):
    """Correlation matrix of a covariance matrix: C_ij / sqrt(C_ii C_jj), diagonal exactly 1.

    As :func:`nilearn.connectome.cov_to_corr`, including its handling of bad input: a zero
    or negative variance gives inf/NaN entries with numpy's RuntimeWarning, not an error.

    Parameters
    ----------
    covariance : (n, n) array-like
        A covariance matrix.

    Returns
    -------
    (n, n) numpy.ndarray

    Raises
    ------
    DimensionError
        ``covariance`` is not a square 2-D matrix.
    """
    covariance = np.asarray(covariance)
    _check_square(covariance, "covariance")
    diagonal = np.atleast_2d(1.0 / np.sqrt(np.diag(covariance)))
    correlation = covariance * diagonal * diagonal.T
    np.fill_diagonal(correlation, 1.0)
    return correlation


def prec_to_partial(precision):
    """Partial correlation matrix of a precision matrix: -P_ij / sqrt(P_ii P_jj), diagonal 1.

    As :func:`nilearn.connectome.prec_to_partial` (bad input handled like
    :func:`cov_to_corr`).

    Parameters
    ----------
    precision : (n, n) array-like
        A precision (inverse covariance) matrix.

    Returns
    -------
    (n, n) numpy.ndarray

    Raises
    ------
    DimensionError
        ``precision`` is not a square 2-D matrix.
    """
    precision = np.asarray(precision)
    _check_square(precision, "precision")
    partial_correlation = -cov_to_corr(precision)
    np.fill_diagonal(partial_correlation, 1.0)
    return partial_correlation
