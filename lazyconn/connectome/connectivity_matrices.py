"""Connectivity matrices: nilearn's ``ConnectivityMeasure`` and matrix helpers.

Same names, parameters, defaults and numbers as ``nilearn.connectome`` 0.14.1. The estimator is
written with the per-subject building blocks of :mod:`lazyconn.connectome.blocks`, and adds
entry points from precomputed covariances (``fit_from_covariances``, ``fit_from_partial``,
``transform_covariances``, ``subject_transform``) so a group pipeline can compute subjects on
dask workers and reduce across subjects with the same maths.
"""

from __future__ import annotations

from math import sqrt

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone

from lazyconn._progress import log_step
from lazyconn._utils import check_fitted, check_in
from lazyconn.connectome._linalg import (
    _check_square,
    _geometric_mean,
    _map_eigenvalues,
    cov_to_corr,
    prec_to_partial,
    sym_matrix_to_vec,
    vec_to_sym_matrix,
)
from lazyconn.connectome.blocks import (
    KINDS,
    _is_dask,
    _is_sparse,
    check_cov_estimator,
    check_time_series,
    clean_vectors,
    combine,
    default_cov_estimator,
    finalize_mean,
    partial_sum,
    subject_connectivity,
    subject_covariance,
    tangent_mean,
)
from lazyconn.exceptions import (
    DimensionError,
    ParameterError,
    ParameterTypeError,
)

__all__ = [
    "ConnectivityMeasure",
    "_geometric_mean",
    "cov_to_corr",
    "prec_to_partial",
    "sym_matrix_to_vec",
    "vec_to_sym_matrix",
]

#: Values nilearn documents for ``standardize`` (only the literal ``True`` z-scores here).
_STANDARDIZE_VALUES = (True, False, None, "zscore_sample", "psc")


# auto_wrap_output_keys=None: no sklearn set_output wrapper around transform (set_output is
# not implemented, as nilearn), so warnings point at the user's line.
class ConnectivityMeasure(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Functional connectivity matrices of several subjects (nilearn's ConnectivityMeasure).

    Parameters
    ----------
    cov_estimator : scikit-learn covariance estimator or None, \
            default=None (``LedoitWolf(store_precision=False)``)
        Estimator with ``fit(X)`` and ``covariance_``, e.g. ``GraphicalLassoCV()``. Never
        modified: a clone is fitted per subject.
    kind : {"covariance", "correlation", "partial correlation", "tangent", "precision"}, \
            default="covariance"
        The matrix kind.
    vectorize : bool, default=False
        Return the flattened lower-triangular parts (:func:`sym_matrix_to_vec`).
    discard_diagonal : bool, default=False
        With ``vectorize``, leave out the diagonal.
    standardize : {True, False, None, "zscore_sample", "psc"}, default=True
        As nilearn 0.14.1: only the literal ``True`` z-scores the signals (ddof=1), and only
        for ``kind="correlation"``; ``"zscore_sample"`` behaves like ``False`` there (this
        changes the LedoitWolf shrinkage). lazyconn rejects values outside this list (nilearn
        ignores them).
    verbose : int, default=0
        Write "[ConnectivityMeasure.fit] Finished fit" when > 0 (on stderr, as the
        maskers' messages; nilearn prints it on stdout).

    Attributes
    ----------
    cov_estimator_ : estimator
        Unfitted clone of ``cov_estimator`` (or the default). nilearn leaves it fitted on the
        last subject; lazyconn fits a fresh clone per subject so subjects can run in parallel.
    mean_ : numpy.ndarray (n_features, n_features)
        Mean of the subject matrices (symmetrised); for ``"tangent"``, the geometric mean of
        the covariances.
    whitening_ : numpy.ndarray or None
        ``mean_ ** -1/2`` for ``"tangent"``, else None.
    n_features_in_ : int
        Number of regions seen during fit.

    Notes
    -----
    Differences from nilearn, all about bad input: errors are lazyconn exceptions
    (subclasses of nilearn's ValueError / TypeError) with messages naming the subject; a
    singular covariance for ``"precision"`` / ``"partial correlation"`` raises ParameterError
    instead of scipy's LinAlgError; a non positive definite covariance in tangent
    ``transform`` raises instead of returning NaNs; subjects may also be 2-D dask arrays.
    """

    def __init__(
        self,
        cov_estimator=None,
        kind="covariance",
        vectorize=False,
        discard_diagonal=False,
        standardize=True,
        verbose=0,
    ):
        self.cov_estimator = cov_estimator
        self.kind = kind
        self.vectorize = vectorize
        self.discard_diagonal = discard_diagonal
        self.standardize = standardize
        self.verbose = verbose

    # ------------------------------------------------------------------ checks
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "cov_estimator_")

    def _check_fitted(self) -> None:
        check_fitted(self)

    def _check_params(self) -> None:
        check_in("kind", self.kind, KINDS)
        if self.cov_estimator is not None:
            check_cov_estimator(self.cov_estimator)
        if not any(
            self.standardize is v or (isinstance(v, str) and self.standardize == v)
            for v in _STANDARDIZE_VALUES
        ):
            raise ParameterError(
                f"standardize={self.standardize!r} is not valid; expected one of "
                f"{', '.join(map(repr, _STANDARDIZE_VALUES))}."
            )

    def _check_subjects(self, X) -> list[np.ndarray]:
        """List of validated (n_samples, n_features) arrays; a single 2-D array is one subject."""
        if _is_sparse(X):
            check_time_series(X, "X")  # raises: sparse input is not supported
        if isinstance(X, (str, bytes)) or not hasattr(X, "__iter__"):
            raise ParameterTypeError(
                f"X has type {type(X).__name__}; expected an iterable (e.g. a list) of 2-D "
                "arrays of shape (n_samples, n_features), one per subject."
            )
        single = (isinstance(X, np.ndarray) or _is_dask(X)) and X.ndim == 2
        if single:
            X = [X]  # nilearn's rule: one subject
        elif isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype != object:
            raise DimensionError(
                f"X is a 1-D array of shape {X.shape}; expected a list of 2-D arrays of shape "
                "(n_samples, n_features), one per subject. Reshape your data with ts[:, None] "
                "for one region."
            )
        X = list(X)
        if not X:
            raise ParameterError("X=[] is empty; expected at least one subject's time series.")
        n_features = self.n_features_in_ if self.__sklearn_is_fitted__() else None
        subjects = [
            check_time_series(x, "X" if single else f"X[{i}]", n_features) for i, x in enumerate(X)
        ]
        features = [s.shape[1] for s in subjects]
        if len(set(features)) > 1:
            raise DimensionError(
                "All subjects must have the same number of features (regions); got "
                f"n_features={features}, expected every subject to have {features[0]} "
                f"like X[0] (X[{next(i for i, f in enumerate(features) if f != features[0])}] "
                "differs)."
            )
        return subjects

    def _check_confounds(self, confounds) -> None:
        if confounds is None:
            return
        if not hasattr(confounds, "__iter__"):
            raise ParameterTypeError(
                f"confounds={confounds!r} has type {type(confounds).__name__}; expected an "
                "array (n_subjects,) or (n_subjects, n_confounds), a DataFrame or a list."
            )
        if not self.vectorize:
            raise ParameterError(
                "'confounds' are provided but vectorize=False. Confounds are only cleaned on "
                "vectorized matrices as second level connectome regression but not on "
                "symmetric matrices; expected vectorize=True or confounds=None."
            )

    def _check_group(self, n_subjects: int) -> None:
        if self.kind == "tangent" and n_subjects <= 1:
            raise ParameterError(
                "Tangent space parametrization can only be applied to a group of subjects, as "
                f"it returns deviations to the mean. You provided {n_subjects} subject; "
                "expected at least 2 (fit alone accepts one)."
            )

    # ------------------------------------------------------- building blocks
    @property
    def _standardize_signals(self) -> bool:
        # nilearn's rule: literal True, correlation only.
        return self.kind == "correlation" and self.standardize is True

    def subject_covariance(self, time_series):
        """One subject's covariance as ``fit``/``transform`` estimate it (picklable, unfitted OK).

        Applies nilearn's rule (z-score first only for ``kind="correlation"`` and
        ``standardize=True``) and clones ``cov_estimator``; see
        :func:`lazyconn.connectome.subject_covariance`.
        """
        self._check_params()
        n_features = self.n_features_in_ if self.__sklearn_is_fitted__() else None
        time_series = check_time_series(time_series, n_features=n_features)
        return subject_covariance(
            time_series, self.cov_estimator, standardize=self._standardize_signals
        )

    def subject_connectivity(self, covariance, name: str = "covariance"):
        """One subject's ``kind`` matrix from its covariance, before vectorization.

        For kinds other than tangent this needs no fit: use it to build the
        :func:`partial_sum` inputs of :meth:`fit_from_partial`.
        """
        self._check_params()
        whitening = None
        if self.kind == "tangent":
            self._check_fitted()
            whitening = self.whitening_
        return subject_connectivity(covariance, self.kind, whitening=whitening, name=name)

    def subject_transform(self, covariance, name: str = "covariance"):
        """One subject's ``transform`` output (matrix, or vector if ``vectorize``), no confounds."""
        self._check_fitted()
        self._check_n_features(np.shape(covariance), name)
        connectivity = self.subject_connectivity(covariance, name)
        if self.vectorize:
            return sym_matrix_to_vec(connectivity, discard_diagonal=self.discard_diagonal)
        return connectivity

    def _check_n_features(self, shape, name: str) -> None:
        if tuple(shape) != (self.n_features_in_,) * 2:
            raise DimensionError(
                f"{name} of shape {tuple(shape)} does not fit: {type(self).__name__} is "
                f"expecting {self.n_features_in_} features as input, expected shape "
                f"{(self.n_features_in_, self.n_features_in_)}."
            )

    def _set_fitted(self, n_features: int) -> None:
        self.cov_estimator_ = (
            default_cov_estimator() if self.cov_estimator is None else clone(self.cov_estimator)
        )
        self.n_features_in_ = int(n_features)

    def _check_covariances(self, covariances) -> list[np.ndarray]:
        covariances = [np.asarray(c) for c in covariances]
        if not covariances:
            raise ParameterError("covariances=[] is empty; expected at least one subject.")
        for index, cov in enumerate(covariances):
            _check_square(cov, f"covariances[{index}]")
            if cov.shape != covariances[0].shape:
                raise DimensionError(
                    f"covariances[{index}] has shape {cov.shape}; expected "
                    f"{covariances[0].shape} like covariances[0] (all subjects must have the "
                    "same regions)."
                )
        return covariances

    def fit_from_covariances(self, covariances):
        """Fit from subject covariances (from :meth:`subject_covariance`), as ``fit`` does.

        Gives the same ``mean_`` and ``whitening_`` as ``fit`` on the time series.
        """
        self._check_params()
        covariances = self._check_covariances(covariances)
        self._set_fitted(covariances[0].shape[0])
        if self.kind == "tangent":
            self.mean_, self.whitening_ = tangent_mean(covariances)
        else:
            self.mean_ = finalize_mean(
                combine(
                    partial_sum([self.subject_connectivity(c, f"covariance of subject {i}")])
                    for i, c in enumerate(covariances)
                )
            )
            self.whitening_ = None
        if self.verbose:
            log_step(f"{type(self).__name__}.fit", "Finished fit")
        return self

    def fit_from_partial(self, partial):
        """Fit from a reduced ``(sum, count)`` of subject matrices (kinds other than tangent).

        ``partial`` is the :func:`combine` of :func:`partial_sum` over all subjects of
        :meth:`subject_connectivity` outputs (in any grouping/order). The geometric mean of
        ``kind="tangent"`` is not a sum: use :meth:`fit_from_covariances`.
        """
        self._check_params()
        if self.kind == "tangent":
            raise ParameterError(
                "fit_from_partial is not valid for kind='tangent' (its mean_ is a geometric "
                "mean, not a sum); expected fit_from_covariances(covariances)."
            )
        total, count = partial
        total = np.asarray(total)
        _check_square(total, "partial sum")
        self._set_fitted(total.shape[0])
        self.mean_ = finalize_mean((total, count))
        self.whitening_ = None
        return self

    def transform_covariances(self, covariances, confounds=None):
        """``transform`` from subject covariances (from :meth:`subject_covariance`)."""
        self._check_fitted()
        covariances = self._check_covariances(covariances)
        self._check_confounds(confounds)
        self._check_group(len(covariances))
        self._check_n_features(covariances[0].shape, "covariances")
        connectivities = np.array(
            [
                self.subject_connectivity(c, f"covariance of subject {i}")
                for i, c in enumerate(covariances)
            ]
        )
        if self.vectorize:
            connectivities = sym_matrix_to_vec(
                connectivities, discard_diagonal=self.discard_diagonal
            )
            if confounds is not None:
                connectivities = clean_vectors(connectivities, confounds)
        return connectivities

    # ----------------------------------------------------------- sklearn API
    def fit(self, X, y=None):
        """Estimate every subject's covariance and the group ``mean_`` (and ``whitening_``).

        Parameters
        ----------
        X : list of numpy.ndarray (n_samples, n_features)
            One array per subject (n_samples may differ); a single 2-D array is one subject.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        del y
        self._check_params()
        for attribute in ("cov_estimator_", "n_features_in_"):  # refit from scratch
            self.__dict__.pop(attribute, None)
        subjects = self._check_subjects(X)
        return self.fit_from_covariances([self.subject_covariance(s) for s in subjects])

    def fit_transform(self, X, y=None, confounds=None):
        """``fit`` then ``transform`` on the same subjects, estimating covariances once.

        Parameters
        ----------
        X : list of numpy.ndarray (n_samples, n_features)
        y : None
            Ignored.
        confounds : numpy.ndarray (n_subjects,) or (n_subjects, n_confounds), DataFrame, \
                or None
            Second-level confounds regressed out of the vectorized matrices (only with
            ``vectorize=True``), through nilearn's ``signal.clean`` defaults: detrended and
            z-scored across subjects (:func:`clean_vectors`).

        Returns
        -------
        numpy.ndarray (n_subjects, n_features, n_features), or (n_subjects, n_coefficients)
        if ``vectorize``.
        """
        del y
        self._check_params()
        for attribute in ("cov_estimator_", "n_features_in_"):
            self.__dict__.pop(attribute, None)
        subjects = self._check_subjects(X)
        self._check_confounds(confounds)
        self._check_group(len(subjects))
        covariances = [self.subject_covariance(s) for s in subjects]
        self.fit_from_covariances(covariances)
        return self.transform_covariances(covariances, confounds=confounds)

    def transform(self, X, confounds=None):
        """Connectivity matrices of ``kind`` for each subject (tangent: relative to ``mean_``).

        Parameters
        ----------
        X : list of numpy.ndarray (n_samples, n_features)
        confounds : see :meth:`fit_transform`

        Returns
        -------
        numpy.ndarray (n_subjects, n_features, n_features), or (n_subjects, n_coefficients)
        if ``vectorize``.
        """
        self._check_fitted()
        subjects = self._check_subjects(X)
        self._check_confounds(confounds)
        self._check_group(len(subjects))
        covariances = [self.subject_covariance(s) for s in subjects]
        return self.transform_covariances(covariances, confounds=confounds)

    def inverse_transform(self, connectivities, diagonal=None):
        """Matrices from (vectorized) connectivities; tangent vectors back to covariances.

        Parameters
        ----------
        connectivities : array-like (n_subjects, n_features, n_features) or vectors
        diagonal : numpy.ndarray (n_subjects, n_features) or None
            Needed when ``discard_diagonal`` dropped it, except for the correlation kinds
            (diagonal 1). Passed to :func:`vec_to_sym_matrix` (multiplied by sqrt(2)).

        Returns
        -------
        numpy.ndarray (n_subjects, n_features, n_features)
        """
        self._check_fitted()
        connectivities = np.array(connectivities)
        if self.vectorize:
            if self.discard_diagonal and diagonal is None:
                if self.kind in ("correlation", "partial correlation"):
                    diagonal = np.ones((connectivities.shape[0], self.mean_.shape[0])) / sqrt(2.0)
                else:
                    raise ParameterError(
                        "diagonal values has been discarded and are unknown for "
                        f"{self.kind} kind, cannot reconstruct connectivity matrices; "
                        "expected diagonal= (n_subjects, n_features)."
                    )
            connectivities = vec_to_sym_matrix(connectivities, diagonal=diagonal)
        if self.kind == "tangent":
            mean_sqrt = _map_eigenvalues(np.sqrt, self.mean_)
            connectivities = np.array(
                [
                    mean_sqrt.dot(_map_eigenvalues(np.exp, displacement)).dot(mean_sqrt)
                    for displacement in connectivities
                ]
            )
        return connectivities

    def set_output(self, *, transform=None):
        """Not implemented (as nilearn)."""
        raise NotImplementedError()
