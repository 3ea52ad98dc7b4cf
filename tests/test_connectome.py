"""lazyconn.connectome against nilearn 0.14.1 on the same signals."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from nilearn import connectome as nilearn_connectome
from nilearn.connectome.connectivity_matrices import _geometric_mean as nilearn_geometric_mean
from sklearn.base import clone
from sklearn.covariance import EmpiricalCovariance, GraphicalLassoCV, LedoitWolf
from threadpoolctl import threadpool_limits

from lazyconn import connectome
from lazyconn.connectome import ConnectivityMeasure
from lazyconn.exceptions import (
    DimensionError,
    NotFittedError,
    ParameterError,
    ParameterTypeError,
)


@pytest.fixture(autouse=True)
def _single_blas_thread():
    """Tiny matrices: multi-threaded OpenBLAS only adds contention (10 ms per 6x6 inv)."""
    with threadpool_limits(1):
        yield


KINDS = ["covariance", "correlation", "partial correlation", "tangent", "precision"]
ATOL = 1e-6


def _subjects(rng, n_subjects=5, n_features=6, n_samples=(40, 35, 50, 45, 38), dtype=None):
    """Correlated signals of unequal lengths with unequal column scales."""
    mixing = rng.standard_normal((n_features, n_features))
    scales = np.linspace(0.5, 3.0, n_features)
    out = []
    for i in range(n_subjects):
        n = n_samples[i % len(n_samples)]
        x = rng.standard_normal((n, n_features)) @ mixing * scales + 10.0
        out.append(x.astype(dtype) if dtype else x)
    return out


@pytest.fixture
def subjects(rng):
    return _subjects(rng)


def _pair(**params):
    return (nilearn_connectome.ConnectivityMeasure(**params), ConnectivityMeasure(**params))


def _assert_fitted_equal(ours, theirs, atol=ATOL):
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=0, atol=atol)
    if theirs.whitening_ is None:
        assert ours.whitening_ is None
    else:
        np.testing.assert_allclose(ours.whitening_, theirs.whitening_, rtol=0, atol=atol)
    assert ours.n_features_in_ == theirs.n_features_in_


# ----------------------------------------------------------------- parity


# standardize only matters for correlation (nilearn's rule)
_KIND_STANDARDIZE = [(kind, True) for kind in KINDS] + [
    ("correlation", False),
    ("correlation", "zscore_sample"),
    ("covariance", False),
]


@pytest.mark.parametrize("kind,standardize", _KIND_STANDARDIZE)
@pytest.mark.parametrize(
    "vectorize,discard_diagonal", [(False, False), (True, False), (True, True)]
)
def test_fit_transform_matches_nilearn(subjects, kind, vectorize, discard_diagonal, standardize):
    theirs, ours = _pair(
        kind=kind, vectorize=vectorize, discard_diagonal=discard_diagonal, standardize=standardize
    )
    expected = theirs.fit_transform(subjects)
    result = ours.fit_transform(subjects)
    assert result.shape == expected.shape
    assert result.dtype == expected.dtype
    np.testing.assert_allclose(result, expected, rtol=0, atol=ATOL)
    _assert_fitted_equal(ours, theirs)
    # fit then transform on other subjects gives the same as nilearn too
    others = subjects[1:4]
    np.testing.assert_allclose(
        ours.fit(subjects).transform(others), theirs.transform(others), rtol=0, atol=ATOL
    )


def test_standardize_zscore_sample_is_not_true_like_nilearn(subjects):
    """nilearn z-scores only for the literal True: "zscore_sample" changes the shrinkage."""
    true = ConnectivityMeasure(kind="correlation", standardize=True).fit_transform(subjects)
    sample = ConnectivityMeasure(kind="correlation", standardize="zscore_sample")
    assert np.abs(true - sample.fit_transform(subjects)).max() > 1e-4


@pytest.mark.parametrize("kind", ["partial correlation", "tangent"])
def test_graphical_lasso_cv_matches_nilearn(rng, kind):
    # well-conditioned signals so the lasso converges fast
    mixing = np.eye(5) + 0.3 * rng.standard_normal((5, 5))
    subjects = [rng.standard_normal((60, 5)) @ mixing for _ in range(3)]
    estimator = GraphicalLassoCV(alphas=3, n_refinements=2)
    theirs, ours = _pair(cov_estimator=estimator, kind=kind, vectorize=True)
    np.testing.assert_allclose(
        ours.fit_transform(subjects), theirs.fit_transform(subjects), rtol=0, atol=ATOL
    )
    _assert_fitted_equal(ours, theirs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("discard_diagonal", [False, True])
def test_inverse_transform_matches_nilearn(subjects, kind, discard_diagonal):
    theirs, ours = _pair(kind=kind, vectorize=True, discard_diagonal=discard_diagonal)
    vectors = ours.fit_transform(subjects)
    theirs.fit(subjects)
    if discard_diagonal and kind not in ("correlation", "partial correlation"):
        with pytest.raises(ParameterError, match=f"unknown for {kind} kind.*expected diagonal="):
            ours.inverse_transform(vectors)
        diagonal = np.ones((len(subjects), 6))
        expected = theirs.inverse_transform(vectors, diagonal=diagonal)
        result = ours.inverse_transform(vectors, diagonal=diagonal)
    else:
        expected = theirs.inverse_transform(vectors)
        result = ours.inverse_transform(vectors)
        if kind != "tangent" and not discard_diagonal:
            # round trip back to the matrices
            matrices = ConnectivityMeasure(kind=kind).fit_transform(subjects)
            np.testing.assert_allclose(result, matrices, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result, expected, rtol=0, atol=ATOL)


def test_inverse_transform_tangent_recovers_covariances(subjects):
    ours = ConnectivityMeasure(kind="tangent")
    tangent = ours.fit_transform(subjects)
    covariances = ConnectivityMeasure(kind="covariance").fit_transform(subjects)
    np.testing.assert_allclose(ours.inverse_transform(tangent), covariances, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", ["correlation", "tangent"])
def test_confounds_match_nilearn(rng, kind):
    subjects = _subjects(rng, n_subjects=12)
    confounds = rng.standard_normal((12, 2))
    theirs, ours = _pair(kind=kind, vectorize=True, discard_diagonal=True)
    expected = theirs.fit_transform(subjects, confounds=confounds)
    np.testing.assert_allclose(
        ours.fit_transform(subjects, confounds=confounds), expected, rtol=0, atol=ATOL
    )
    np.testing.assert_allclose(
        ours.transform(subjects, confounds=confounds),
        theirs.transform(subjects, confounds=confounds),
        rtol=0,
        atol=ATOL,
    )
    # DataFrame, 1-D and list forms, as signal.clean accepts them
    frame = pd.DataFrame(confounds, columns=["age", "motion"])
    np.testing.assert_allclose(
        ours.fit_transform(subjects, confounds=frame), expected, rtol=0, atol=ATOL
    )
    np.testing.assert_allclose(
        ours.fit_transform(subjects, confounds=[confounds[:, 0], confounds[:, 1:]]),
        expected,
        rtol=0,
        atol=ATOL,
    )
    np.testing.assert_allclose(
        ours.fit_transform(subjects, confounds=confounds[:, 0]),
        theirs.fit_transform(subjects, confounds=confounds[:, 0]),
        rtol=0,
        atol=ATOL,
    )


def test_confounds_from_csv_match_nilearn(rng, tmp_path):
    subjects = _subjects(rng, n_subjects=10)
    confounds = rng.standard_normal((10, 2))
    path = tmp_path / "confounds.csv"
    pd.DataFrame(confounds, columns=["a", "b"]).to_csv(path, index=False)
    theirs, ours = _pair(kind="correlation", vectorize=True)
    np.testing.assert_allclose(
        ours.fit_transform(subjects, confounds=str(path)),
        theirs.fit_transform(subjects, confounds=confounds),
        rtol=0,
        atol=ATOL,
    )


# ------------------------------------------------------------- helpers


def test_matrix_helpers_match_nilearn(rng):
    a = rng.standard_normal((3, 5, 5))
    stack = a @ a.transpose(0, 2, 1) + np.eye(5)
    for discard in (False, True):
        np.testing.assert_array_equal(
            connectome.sym_matrix_to_vec(stack, discard_diagonal=discard),
            nilearn_connectome.sym_matrix_to_vec(stack, discard_diagonal=discard),
        )
    vec = nilearn_connectome.sym_matrix_to_vec(stack)
    np.testing.assert_array_equal(
        connectome.vec_to_sym_matrix(vec), nilearn_connectome.vec_to_sym_matrix(vec)
    )
    np.testing.assert_allclose(connectome.vec_to_sym_matrix(vec), stack, rtol=1e-15)
    off = nilearn_connectome.sym_matrix_to_vec(stack, discard_diagonal=True)
    diagonal = np.einsum("kii->ki", stack) / np.sqrt(2)
    np.testing.assert_array_equal(
        connectome.vec_to_sym_matrix(off, diagonal=diagonal),
        nilearn_connectome.vec_to_sym_matrix(off, diagonal=diagonal),
    )
    np.testing.assert_allclose(connectome.vec_to_sym_matrix(off, diagonal=diagonal), stack)
    # the documented nilearn examples
    np.testing.assert_allclose(
        connectome.vec_to_sym_matrix(np.arange(1, 7)),
        nilearn_connectome.vec_to_sym_matrix(np.arange(1, 7)),
    )
    for matrix in stack:
        np.testing.assert_allclose(
            connectome.cov_to_corr(matrix), nilearn_connectome.cov_to_corr(matrix), rtol=1e-15
        )
        precision = np.linalg.inv(matrix)
        np.testing.assert_allclose(
            connectome.prec_to_partial(precision),
            nilearn_connectome.prec_to_partial(precision),
            rtol=1e-15,
        )


def test_helpers_keep_nilearn_dtypes(rng):
    a = rng.standard_normal((4, 4)).astype(np.float32)
    sym = a @ a.T
    for discard in (False, True):
        assert (
            connectome.sym_matrix_to_vec(sym, discard).dtype
            == nilearn_connectome.sym_matrix_to_vec(sym, discard).dtype
        )
    vec = connectome.sym_matrix_to_vec(sym, True)
    assert connectome.vec_to_sym_matrix(vec, np.ones(4, np.float32)).dtype == np.float64


def test_bad_variance_handled_like_nilearn():
    covariance = np.array([[0.0, 0.0], [0.0, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = nilearn_connectome.cov_to_corr(covariance)
        result = connectome.cov_to_corr(covariance)
        np.testing.assert_array_equal(result, expected)  # NaN where nilearn has NaN
        precision = np.array([[-1.0, 0.5], [0.5, 2.0]])
        np.testing.assert_array_equal(
            connectome.prec_to_partial(precision), nilearn_connectome.prec_to_partial(precision)
        )


def test_geometric_mean_matches_nilearn(rng):
    a = rng.standard_normal((4, 5, 5))
    matrices = list(a @ a.transpose(0, 2, 1) + 0.5 * np.eye(5))
    for kwargs in ({}, {"max_iter": 30}, {"init": matrices[1], "max_iter": 3, "tol": None}):
        np.testing.assert_allclose(
            connectome._geometric_mean(matrices, **kwargs),
            nilearn_geometric_mean(matrices, **kwargs),
            rtol=0,
            atol=1e-10,
        )
    # geometric mean of commuting (diagonal) matrices is the element-wise geometric mean
    diagonals = [np.diag([1.0, 4.0]), np.diag([4.0, 9.0])]
    np.testing.assert_allclose(
        connectome._geometric_mean(diagonals, max_iter=30), np.diag([2.0, 6.0]), atol=1e-9
    )
    with pytest.warns(UserWarning, match="Maximum number of iterations 1 reached"):
        connectome._geometric_mean(matrices, max_iter=1)


# ----------------------------------------------------- building blocks


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_in_any_grouping_equal_fit_transform(subjects, kind):
    """Map / tree-reduce / map with the public blocks == fit_transform == nilearn."""
    theirs, ours = _pair(kind=kind, vectorize=True)
    expected = theirs.fit_transform(subjects)
    direct = ours.fit_transform(subjects)

    # What a pipeline ships to workers: pickled estimator and functions.
    measure = pickle.loads(pickle.dumps(ConnectivityMeasure(kind=kind, vectorize=True)))
    covariances = [measure.subject_covariance(ts) for ts in subjects]
    if kind == "tangent":
        mean, whitening = connectome.tangent_mean(covariances)
        np.testing.assert_allclose(mean, theirs.mean_, rtol=0, atol=ATOL)
        np.testing.assert_allclose(whitening, theirs.whitening_, rtol=0, atol=ATOL)
        measure.fit_from_covariances(covariances[::-1])  # subject order does not matter
    else:
        matrices = [measure.subject_connectivity(c) for c in covariances]
        # two different tree shapes and orders
        left = connectome.combine(
            [connectome.partial_sum(matrices[:2]), connectome.partial_sum(matrices[2:])]
        )
        right = connectome.combine(
            [
                connectome.partial_sum(matrices[4]),
                connectome.combine(
                    [connectome.partial_sum(matrices[1:4]), connectome.partial_sum(matrices[:1])]
                ),
            ]
        )
        assert left[1] == right[1] == len(subjects)
        np.testing.assert_allclose(connectome.finalize_mean(left), theirs.mean_, atol=ATOL)
        measure.fit_from_partial(right)
    _assert_fitted_equal(measure, theirs)
    per_subject = np.array(
        [pickle.loads(pickle.dumps(measure)).subject_transform(c) for c in covariances]
    )
    np.testing.assert_allclose(per_subject, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(per_subject, direct, rtol=0, atol=1e-12)
    np.testing.assert_allclose(measure.transform_covariances(covariances), expected, atol=ATOL)
    # the functional form gives the same per-subject matrices
    cov0 = connectome.subject_covariance(
        subjects[0], LedoitWolf(store_precision=False), standardize=kind == "correlation"
    )
    np.testing.assert_allclose(cov0, covariances[0], rtol=0, atol=1e-14)
    matrix0 = connectome.subject_connectivity(cov0, kind, whitening=measure.whitening_)
    np.testing.assert_allclose(
        connectome.sym_matrix_to_vec(matrix0), expected[0], rtol=0, atol=ATOL
    )


def test_blocks_run_as_a_dask_tree_reduction(subjects):
    dask = pytest.importorskip("dask")
    from dask import delayed

    measure = ConnectivityMeasure(kind="partial correlation")
    covariances = [delayed(measure.subject_covariance)(ts) for ts in subjects]
    sums = [
        delayed(connectome.partial_sum)([delayed(measure.subject_connectivity)(c)])
        for c in covariances
    ]
    while len(sums) > 1:  # pairwise tree
        sums = [delayed(connectome.combine)(sums[i : i + 2]) for i in range(0, len(sums), 2)]
    total, covs = dask.compute(sums[0], covariances, scheduler="threads")
    measure.fit_from_partial(total)
    theirs = nilearn_connectome.ConnectivityMeasure(kind="partial correlation")
    expected = theirs.fit_transform(subjects)
    _assert_fitted_equal(measure, theirs)
    np.testing.assert_allclose(measure.transform_covariances(covs), expected, atol=ATOL)


def test_clean_vectors_matches_nilearn_signal_clean(rng):
    from nilearn.signal import clean

    vectors = rng.standard_normal((15, 10))
    confounds = rng.standard_normal((15, 3))
    np.testing.assert_allclose(
        connectome.clean_vectors(vectors, confounds),
        clean(vectors, confounds=confounds),
        rtol=0,
        atol=1e-10,
    )


def test_subject_covariance_does_not_modify_estimator(subjects):
    estimator = EmpiricalCovariance()
    connectome.subject_covariance(subjects[0], estimator)
    assert not hasattr(estimator, "covariance_")
    np.testing.assert_allclose(
        connectome.subject_covariance(subjects[0], estimator),
        np.cov(subjects[0], rowvar=False, ddof=0),
        rtol=1e-12,
    )


# ------------------------------------------------------ edge-case parity


@pytest.mark.filterwarnings("ignore:Maximum number of iterations 30")  # float32: both warn
@pytest.mark.parametrize("kind", KINDS)
def test_float32_input_matches_nilearn(rng, kind):
    subjects = _subjects(rng, dtype=np.float32)
    theirs, ours = _pair(kind=kind)
    expected = theirs.fit_transform(subjects)
    result = ours.fit_transform(subjects)
    assert result.dtype == expected.dtype == np.float32
    assert ours.mean_.dtype == theirs.mean_.dtype
    np.testing.assert_allclose(result, expected, rtol=0, atol=ATOL)
    _assert_fitted_equal(ours, theirs)


@pytest.mark.parametrize("kind", KINDS)
def test_fewer_samples_than_regions_matches_nilearn(rng, kind):
    subjects = _subjects(rng, n_subjects=3, n_features=12, n_samples=(6, 8, 5))
    theirs, ours = _pair(kind=kind, vectorize=True)
    np.testing.assert_allclose(
        ours.fit_transform(subjects), theirs.fit_transform(subjects), rtol=0, atol=ATOL
    )
    _assert_fitted_equal(ours, theirs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("standardize", [True, False])
def test_constant_column_matches_nilearn(rng, kind, standardize):
    subjects = _subjects(rng, n_subjects=3)
    for ts in subjects:
        ts[:, 2] = 7.0
    theirs, ours = _pair(kind=kind, standardize=standardize)
    np.testing.assert_allclose(
        ours.fit_transform(subjects), theirs.fit_transform(subjects), rtol=0, atol=ATOL
    )


def test_single_subject_array_is_one_subject_like_nilearn(subjects):
    theirs, ours = _pair(kind="correlation")
    result = ours.fit_transform(subjects[0])
    assert result.shape == (1, 6, 6)
    np.testing.assert_allclose(result, theirs.fit_transform(subjects[0]), atol=ATOL)
    # a 3-D array is iterated over its first axis (subjects), as nilearn
    stack = np.stack([s[:35] for s in subjects])
    np.testing.assert_allclose(
        ours.fit_transform(stack), theirs.fit_transform(stack), rtol=0, atol=ATOL
    )
    # tangent may be fitted on one subject, but not transform it
    ConnectivityMeasure(kind="tangent").fit(subjects[0])


def test_dask_subjects_accepted(subjects):
    da = pytest.importorskip("dask.array")
    lazy = [da.from_array(s, chunks=(7, 4)) for s in subjects]
    np.testing.assert_allclose(
        ConnectivityMeasure(kind="tangent").fit_transform(lazy),
        ConnectivityMeasure(kind="tangent").fit_transform(subjects),
        rtol=0,
        atol=1e-12,
    )


# ------------------------------------------------------------- errors


def test_error_different_feature_counts(subjects):
    with pytest.raises(DimensionError, match=r"same number of features.*n_features=\[6, 6, 4\]"):
        ConnectivityMeasure().fit([subjects[0], subjects[1], subjects[2][:, :4]])
    measure = ConnectivityMeasure().fit(subjects)
    with pytest.raises(DimensionError, match=r"X\[0\] has 4 features, but .* expecting 6"):
        measure.transform([subjects[0][:, :4]])
    with pytest.raises(
        DimensionError, match=r"covariances of shape \(4, 4\) does not fit: .* expecting 6"
    ):
        measure.transform_covariances([np.eye(4), np.eye(4)])
    with pytest.raises(
        DimensionError, match=r"covariance of shape \(4, 4\) does not fit.*expected shape \(6, 6\)"
    ):
        measure.subject_transform(np.eye(4))


def test_error_bad_subject_types_and_dims(subjects):
    with pytest.raises(DimensionError, match=r"X is a 1-D array of shape \(40,\).*2-D"):
        ConnectivityMeasure().fit(subjects[0][:, 0])
    with pytest.raises(
        DimensionError, match=r"X\[1\] has shape \(35,\) \(1-D\).*Reshape.*ts\[:, None\]"
    ):
        ConnectivityMeasure().fit([subjects[0], subjects[1][:, 0]])
    with pytest.raises(ParameterError, match="X\\[0\\] has type list; expected a 2-D numpy"):
        ConnectivityMeasure().fit([subjects[0].tolist()])
    with pytest.raises(ParameterTypeError, match="X has type int; expected an iterable"):
        ConnectivityMeasure().fit(5)
    with pytest.raises(ParameterError, match="X=\\[\\] is empty"):
        ConnectivityMeasure().fit([])
    bad = subjects[0].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ParameterError, match="X\\[1\\] contains NaN or infinity"):
        ConnectivityMeasure().fit([subjects[0], bad])
    # nilearn raises ValueError for all of these: ours are ValueErrors too
    with pytest.raises(ValueError):
        nilearn_connectome.ConnectivityMeasure().fit([subjects[0], bad])


def test_error_unknown_kind_and_params(subjects):
    with pytest.raises(
        ParameterError,
        match="kind='foo' is not valid; expected one of "
        "'correlation', 'partial correlation', 'tangent', 'covariance', "
        "'precision'",
    ):
        ConnectivityMeasure(kind="foo").fit(subjects)
    with pytest.raises(ParameterError, match=r"cov_estimator='lw' is not valid.*'\.fit\(\)'"):
        ConnectivityMeasure(cov_estimator="lw").fit(subjects)
    with pytest.raises(ParameterError, match="standardize='zscore' is not valid; expected one"):
        ConnectivityMeasure(standardize="zscore").fit(subjects)
    with pytest.raises(ParameterError, match="kind='Tangent' is not valid"):
        connectome.subject_connectivity(np.eye(3), "Tangent")


def test_error_tangent_needs_a_group(subjects):
    with pytest.raises(ParameterError, match=r"group of subjects.*You provided 1 subject"):
        ConnectivityMeasure(kind="tangent").fit_transform(subjects[0])
    measure = ConnectivityMeasure(kind="tangent").fit(subjects)
    with pytest.raises(ParameterError, match="group of subjects"):
        measure.transform([subjects[0]])
    with pytest.raises(ParameterError, match="whitening=None is not valid for kind='tangent'"):
        connectome.subject_connectivity(np.eye(3), "tangent")
    with pytest.raises(ParameterError, match="fit_from_partial is not valid for kind='tangent'"):
        ConnectivityMeasure(kind="tangent").fit_from_partial((np.eye(3), 2))


def test_error_singular_covariance(rng):
    # T < F with the empirical covariance: singular, not positive definite
    subjects = [rng.standard_normal((4, 6)) for _ in range(3)]
    with pytest.raises(
        ParameterError,
        match=r"Expected a symmetric positive definite matrix for "
        r"the covariance of subject 0.*smallest eigenvalue.*LedoitWolf",
    ):
        ConnectivityMeasure(EmpiricalCovariance(), kind="tangent").fit(subjects)
    with pytest.raises(ValueError, match="Expected a symmetric positive definite matrix"):
        nilearn_connectome.ConnectivityMeasure(EmpiricalCovariance(), kind="tangent").fit(subjects)
    # an exactly singular covariance (zero column): ParameterError instead of LinAlgError
    zero = [np.hstack([s[:, :5], np.zeros((4, 1))]) for s in subjects]
    for kind in ("precision", "partial correlation"):
        with pytest.raises(
            ParameterError, match=f"covariance of subject 0 is singular.*kind='{kind}' inverts"
        ):
            ConnectivityMeasure(EmpiricalCovariance(), kind=kind).fit(zero)
    # tangent transform of a singular covariance, after a valid fit
    measure = ConnectivityMeasure(kind="tangent").fit(_subjects(rng))
    singular = np.zeros((6, 6))
    with pytest.raises(
        ParameterError,
        match="Expected a symmetric positive definite matrix for covariance of subject 1",
    ):
        measure.transform_covariances([np.eye(6), singular])
    with pytest.raises(ParameterError, match=r"matrices\[1\].*not symmetric"):
        connectome._geometric_mean([np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]])])


def test_error_vector_length(rng):
    with pytest.raises(
        DimensionError,
        match=r"Vector of unsuitable shape \(3, 4\).*length 4; "
        "expected a triangular number",
    ):
        connectome.vec_to_sym_matrix(np.ones((3, 4)))
    with pytest.raises(
        DimensionError,
        match=r"diagonal of shape \(3, 4\) incompatible.*"
        r"expected diagonal of shape \(3, 3\)",
    ):
        connectome.vec_to_sym_matrix(np.ones((3, 3)), diagonal=np.ones((3, 4)))
    with pytest.raises(DimensionError, match=r"symmetric has shape \(3, 4\); expected square"):
        connectome.sym_matrix_to_vec(np.ones((3, 4)))
    with pytest.raises(DimensionError, match=r"covariance has shape \(2, 3\)"):
        connectome.cov_to_corr(np.ones((2, 3)))


def test_error_confounds(subjects):
    with pytest.raises(ParameterError, match=r"vectorize=False.*expected vectorize=True"):
        ConnectivityMeasure().fit_transform(subjects, confounds=np.ones((5, 1)))
    with pytest.raises(ParameterTypeError, match="confounds=3 has type int"):
        ConnectivityMeasure(vectorize=True).fit_transform(subjects, confounds=3)
    with pytest.raises(
        DimensionError, match="confounds has 4 rows; expected one row per subject \\(5\\)"
    ):
        ConnectivityMeasure(vectorize=True).fit_transform(subjects, confounds=np.ones((4, 1)))


def test_not_fitted_errors(subjects):
    measure = ConnectivityMeasure(kind="tangent")
    for call in (
        lambda: measure.transform(subjects),
        lambda: measure.inverse_transform(np.ones((2, 3, 3))),
        lambda: measure.transform_covariances([np.eye(3)] * 2),
        lambda: measure.subject_transform(np.eye(3)),
    ):
        with pytest.raises(NotFittedError, match=r"not fitted yet\. Call 'fit'"):
            call()


# ----------------------------------------------------- sklearn conventions


def test_sklearn_conventions(subjects):
    estimator = LedoitWolf(assume_centered=True)
    measure = ConnectivityMeasure(cov_estimator=estimator, kind="partial correlation")
    params = measure.get_params()
    assert measure.fit(subjects[:2]) is measure
    assert measure.get_params() == params  # parameters untouched by fit
    assert not hasattr(estimator, "covariance_")  # the user's estimator is not fitted
    cloned = clone(measure)
    assert not hasattr(cloned, "mean_") and cloned.get_params()["kind"] == "partial correlation"
    restored = pickle.loads(pickle.dumps(measure))
    np.testing.assert_array_equal(restored.mean_, measure.mean_)
    np.testing.assert_array_equal(
        restored.transform(subjects[:2]), measure.transform(subjects[:2])
    )
    # no attribute set by __init__ beyond the parameters
    assert set(vars(ConnectivityMeasure())) == set(ConnectivityMeasure().get_params())


def test_sklearn_check_estimator_subset():
    from sklearn.utils import estimator_checks as checks

    estimator = ConnectivityMeasure()
    for check in (
        checks.check_no_attributes_set_in_init,
        checks.check_parameters_default_constructible,
        checks.check_get_params_invariance,
        checks.check_set_params,
        checks.check_dont_overwrite_parameters,
        checks.check_estimators_unfitted,
        checks.check_fit_check_is_fitted,
        checks.check_n_features_in,
        checks.check_estimators_pickle,
        checks.check_n_features_in_after_fitting,
        checks.check_complex_data,
        checks.check_estimators_empty_data_messages,
        checks.check_fit2d_predict1d,
        checks.check_estimator_sparse_array,
        checks.check_estimator_sparse_matrix,
        checks.check_estimators_nan_inf,
        checks.check_transformer_n_iter,
        checks.check_fit_idempotent,
        checks.check_fit2d_1sample,
        checks.check_fit2d_1feature,
    ):
        check(type(estimator).__name__, clone(estimator))


def test_no_future_warning_like_nilearn(subjects):
    """nilearn 0.14.1 emits no FutureWarning about ConnectivityMeasure defaults; neither do we."""
    for kind in KINDS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            nilearn_connectome.ConnectivityMeasure(kind=kind).fit_transform(subjects)
            ConnectivityMeasure(kind=kind).fit_transform(subjects)


def test_error_estimator_without_covariance(subjects):
    class NoCovariance:
        def fit(self, X):
            return self

        def get_params(self, deep=True):
            return {}

    with pytest.raises(
        ParameterError,
        match="produced covariance_ of shape None; expected an "
        "attribute covariance_ of shape \\(6, 6\\)",
    ):
        ConnectivityMeasure(cov_estimator=NoCovariance()).fit(subjects)


def test_vector_helpers_stay_lazy_on_dask(rng):
    da = pytest.importorskip("dask.array")
    from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes

    a = rng.standard_normal((7, 5, 5))
    stack = a + a.transpose(0, 2, 1)
    lazy = da.from_array(stack, chunks=(3, 5, 5))
    with raise_if_dask_computes():
        vec = connectome.sym_matrix_to_vec(lazy)
        off = connectome.sym_matrix_to_vec(lazy, discard_diagonal=True)
        back = connectome.vec_to_sym_matrix(off, diagonal=da.ones((7, 5), chunks=3))
        connectome.sym_matrix_to_vec(inaccessible_dask_array((4, 6, 6), (2, 6, 6)))
    np.testing.assert_array_equal(vec.compute(), nilearn_connectome.sym_matrix_to_vec(stack))
    np.testing.assert_array_equal(
        back.compute(),
        nilearn_connectome.vec_to_sym_matrix(off.compute(), diagonal=np.ones((7, 5))),
    )
