"""Connectivity matrices with nilearn's API (``nilearn.connectome``), plus group building blocks.

``ConnectivityMeasure``, ``sym_matrix_to_vec``, ``vec_to_sym_matrix``, ``cov_to_corr`` and
``prec_to_partial`` match nilearn 0.14.1. The per-subject pieces in
:mod:`lazyconn.connectome.blocks` (``subject_covariance``, ``subject_connectivity``,
``partial_sum``, ``combine``, ``finalize_mean``, ``tangent_mean``, ``clean_vectors``) let a
group pipeline run subjects on dask workers with the same maths.
"""

from lazyconn.connectome._linalg import (
    _geometric_mean,  # noqa: F401  (private, importable as in nilearn)
    cov_to_corr,
    is_spd,
    prec_to_partial,
    sym_matrix_to_vec,
    vec_to_sym_matrix,
)
from lazyconn.connectome.blocks import (
    KINDS,
    clean_vectors,
    combine,
    default_cov_estimator,
    finalize_mean,
    partial_sum,
    subject_connectivity,
    subject_covariance,
    tangent_mean,
)
from lazyconn.connectome.connectivity_matrices import ConnectivityMeasure

__all__ = [
    "KINDS",
    "ConnectivityMeasure",
    "clean_vectors",
    "combine",
    "cov_to_corr",
    "default_cov_estimator",
    "finalize_mean",
    "is_spd",
    "partial_sum",
    "prec_to_partial",
    "subject_connectivity",
    "subject_covariance",
    "sym_matrix_to_vec",
    "tangent_mean",
    "vec_to_sym_matrix",
]
