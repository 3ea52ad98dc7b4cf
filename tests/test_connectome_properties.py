"""Property tests of lazyconn.connectome (hypothesis): invariants that must hold for any input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nilearn import connectome as nilearn_connectome
from threadpoolctl import threadpool_limits

from lazyconn import connectome
from lazyconn.connectome import ConnectivityMeasure

FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(autouse=True)
def _single_blas_thread():
    with threadpool_limits(1):
        yield


@st.composite
def symmetric_stacks(draw):
    """Stacks (..., n, n) of symmetric matrices with 0-2 leading axes."""
    n = draw(st.integers(1, 7))
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).standard_normal((*lead, n, n))
    return a + np.swapaxes(a, -1, -2)


@st.composite
def group_signals(draw, max_subjects=4):
    """A few subjects' signals with more samples than regions (so covariances are SPD)."""
    n_features = draw(st.integers(1, 6))
    n_subjects = draw(st.integers(2, max_subjects))
    lengths = draw(
        st.lists(st.integers(n_features + 2, 25), min_size=n_subjects, max_size=n_subjects)
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mixing = rng.standard_normal((n_features, n_features))
    return [rng.standard_normal((t, n_features)) @ mixing for t in lengths]


@FAST
@given(symmetric_stacks(), st.booleans())
def test_vec_round_trip(stack, discard_diagonal):
    vec = connectome.sym_matrix_to_vec(stack, discard_diagonal=discard_diagonal)
    n = stack.shape[-1]
    assert vec.shape == (*stack.shape[:-2], n * (n + 1) // 2 - n * discard_diagonal)
    np.testing.assert_array_equal(
        vec, nilearn_connectome.sym_matrix_to_vec(stack, discard_diagonal=discard_diagonal)
    )
    diagonal = None
    if discard_diagonal:
        diagonal = np.diagonal(stack, axis1=-2, axis2=-1) / np.sqrt(2)
    back = connectome.vec_to_sym_matrix(vec, diagonal=diagonal)
    np.testing.assert_allclose(back, stack, rtol=1e-14, atol=1e-14)
    # norm-preserving with the diagonal (off-diagonal counted once)
    if not discard_diagonal:
        np.testing.assert_allclose(
            2 * np.linalg.norm(vec, axis=-1) ** 2, np.sum(stack**2, axis=(-2, -1)), rtol=1e-12
        )


@FAST
@given(group_signals())
def test_correlation_and_partial_correlation_invariants(subjects):
    n = subjects[0].shape[1]
    correlation = ConnectivityMeasure(kind="correlation").fit_transform(subjects)
    partial = ConnectivityMeasure(kind="partial correlation").fit_transform(subjects)
    for matrices in (correlation, partial):
        np.testing.assert_allclose(matrices, np.swapaxes(matrices, -1, -2), atol=1e-12)
        np.testing.assert_array_equal(np.diagonal(matrices, axis1=-2, axis2=-1), 1.0)
        assert np.all(np.abs(matrices) <= 1 + 1e-9)
    # guaranteed: LedoitWolf covariances are positive semi-definite, so is their correlation;
    # and 2 I - partial correlation is the correlation of the precision matrix.
    for corr, part in zip(correlation, partial, strict=True):
        assert np.linalg.eigvalsh(corr).min() > -1e-9
        assert np.linalg.eigvalsh(2 * np.eye(n) - part).min() > -1e-9


@FAST
@given(group_signals(max_subjects=5), st.data())
def test_partial_sums_in_any_grouping(subjects, data):
    kind = data.draw(
        st.sampled_from(["covariance", "correlation", "partial correlation", "precision"])
    )
    measure = ConnectivityMeasure(kind=kind)
    matrices = [measure.subject_connectivity(measure.subject_covariance(s)) for s in subjects]
    order = data.draw(st.permutations(range(len(matrices))))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(matrices) - 1))))
    batches = np.split(np.asarray(order), cuts)
    partials = [connectome.partial_sum([matrices[i] for i in batch]) for batch in batches]
    total = connectome.combine(partials[::-1])
    expected = ConnectivityMeasure(kind=kind).fit(subjects).mean_
    np.testing.assert_allclose(
        measure.fit_from_partial(total).mean_, expected, rtol=1e-10, atol=1e-10
    )


@FAST
@given(group_signals())
def test_tangent_round_trip(subjects):
    measure = ConnectivityMeasure(kind="tangent", vectorize=True)
    vectors = measure.fit_transform(subjects)
    covariances = ConnectivityMeasure(kind="covariance").fit_transform(subjects)
    np.testing.assert_allclose(
        measure.inverse_transform(vectors),
        covariances,
        rtol=1e-7,
        atol=1e-9 * np.abs(covariances).max(),
    )
    # the whitening is the inverse square root of the mean
    np.testing.assert_allclose(
        measure.whitening_ @ measure.mean_ @ measure.whitening_,
        np.eye(subjects[0].shape[1]),
        atol=1e-7,
    )
