"""The decomposition's group step without stack-sized temporaries, with the same numbers.

Each function is compared with what it replaces (numpy's ``np.sum(data**2, axis=1)``,
scikit-learn's ``Ridge``) bit for bit, and
its traced peak is checked against the stack's size, which the replaced code allocates
once more.
"""

import tracemalloc

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from lazyconn.decomposition import _multi_pca, dict_learning


def _stack(rng, n_rows, n_voxels, dtype=np.float32):
    """Stacked reductions as the fit holds them: Fortran order, rows of varied scales."""
    scales = rng.uniform(0.1, 10.0, (n_rows, 1))
    return np.asfortranarray((rng.standard_normal((n_rows, n_voxels)) * scales).astype(dtype))


def _traced_peak(fn, *args, tries=3):
    """``fn(*args)`` and the least traced peak of ``tries`` calls (other threads of a test
    session allocate too while tracemalloc runs)."""
    peaks = []
    for _ in range(tries):
        tracemalloc.start()
        try:
            out = fn(*args)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return out, min(peaks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_voxels", [7, 8, 23, 300])
def test_row_sums_of_squares_are_numpys_bit_for_bit(rng, monkeypatch, dtype, n_voxels):
    """Pieces of 7 columns: one piece, a piece and one column, uneven last pieces."""
    monkeypatch.setattr(_multi_pca, "SQUARES_COLUMNS", 7)
    data = _stack(rng, 40, n_voxels, dtype)
    got = _multi_pca.row_sums_of_squares(data)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.sum(data**2, axis=1))
    c_order = np.ascontiguousarray(data)  # not in pieces: numpy's own order
    np.testing.assert_array_equal(
        _multi_pca.row_sums_of_squares(c_order), np.sum(c_order**2, axis=1)
    )


def test_row_sums_of_squares_hold_a_piece_not_the_stack(rng):
    data = _stack(rng, 64, 40_000)
    got, peak = _traced_peak(_multi_pca.row_sums_of_squares, data)
    np.testing.assert_array_equal(got, np.sum(data**2, axis=1))
    assert peak < 0.2 * data.nbytes, (peak, data.nbytes)


def _sklearn_loadings(components, data):
    """nilearn 0.14.1's ``_compute_loadings``."""
    ridge = Ridge(fit_intercept=False, alpha=1e-8)
    ridge.fit(components.T, data.T)
    loadings = ridge.coef_.T
    s = np.sqrt(np.sum(loadings**2, axis=0))
    s[s == 0] = 1
    loadings /= s[np.newaxis, :]
    return loadings


@pytest.mark.parametrize(
    "case", ["float32", "float64", "components float64, data float32", "singular"]
)
def test_loadings_are_sklearn_ridges_bit_for_bit(rng, case):
    """The normal equations solved as scikit-learn's cholesky solver solves them; its
    ``Ridge`` for mixed dtypes and for a system Cholesky cannot factor (it then takes its
    SVD solver)."""
    data_dtype = np.float64 if case == "float64" else np.float32
    data = _stack(rng, 30, 2000, data_dtype)
    components = rng.standard_normal((5, 2000)).astype(
        np.float32 if case in ("float32", "singular") else np.float64
    )
    if case == "singular":
        components[1] = components[0] = 100.0  # C Cᵀ + 1e-8 I is singular in float32
    got = dict_learning._compute_loadings(components.copy(), data)
    ref = _sklearn_loadings(components.copy(), data)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_loadings_do_not_copy_the_stack(rng):
    data = _stack(rng, 64, 40_000)
    components = rng.standard_normal((8, 40_000)).astype(np.float32)
    got, peak = _traced_peak(dict_learning._compute_loadings, components, data)
    np.testing.assert_array_equal(got, _sklearn_loadings(components, data))
    assert peak < 0.2 * data.nbytes, (peak, data.nbytes)


def test_lasso_coding_does_not_copy_the_stack(rng, monkeypatch):
    """The final coding of every voxel (``X`` = the stack's transpose, as the fit passes
    it) holds no copy of it, in float32 or float64: its float64 work goes by blocks of
    voxels (its numbers: tests/test_decomposition.py)."""
    monkeypatch.setattr(dict_learning, "LASSO_BLOCK", 1024)
    data = _stack(rng, 64, 10_000)
    dictionary = rng.standard_normal((8, 64)).astype(np.float32)
    code, peak = _traced_peak(dict_learning._lasso_code, data.T, dictionary, 1.0, 1000, tries=2)
    assert code.shape == (10_000, 8) and np.count_nonzero(code)
    # what remains is the code, an eighth of the stack, and a block's float64 work
    assert peak < 0.5 * data.nbytes, (peak, code.nbytes, data.nbytes)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("replayed", [True, False])
def test_online_learning_shuffles_the_stack_in_place(rng, monkeypatch, replayed):
    """scikit-learn's mini-batch fit shuffles a copy of the stack; here, where its loop is
    replayed, each mini-batch's rows are gathered in the shuffled order, else the stack's
    rows are shuffled in place with the same draws and put back: the same dictionary as
    scikit-learn's ``dict_learning_online``, the stack unchanged after, and no stack-sized
    copy."""
    from sklearn.decomposition import dict_learning_online

    if dict_learning._sklearn_version() not in dict_learning.SHUFFLE_IN_PLACE_VERSIONS:
        pytest.skip("this scikit-learn shuffles its copy")
    if replayed and not dict_learning._streams_online():
        pytest.skip("this scikit-learn's loop is not replayed")
    if not replayed:
        monkeypatch.setattr(dict_learning, "MINIBATCH_STEP_VERSIONS", set())
    permuted = []
    permute = dict_learning._permute_rows
    monkeypatch.setattr(
        dict_learning, "_permute_rows", lambda *a, **k: permuted.append(permute(*a, **k))
    )
    # the coding's working set (a block of voxels) is tested above; here a small one
    monkeypatch.setattr(dict_learning, "LASSO_BLOCK", 512)
    x = np.ascontiguousarray(_stack(rng, 256, 2000).T)  # (V, N), as the fit passes it
    before = x.copy()
    init = rng.standard_normal((8, 256)).astype(np.float32)
    kw = dict(alpha=1.0, batch_size=200, method="cd", dict_init=init, random_state=0)
    _, dictionary = dict_learning_online(
        x, 8, **kw, max_iter=1, verbose=0, return_code=True, shuffle=True, n_jobs=1
    )
    code, peak = _traced_peak(
        lambda: dict_learning._dict_learning_online(x, 8, **kw, max_iter=1, verbose=0), tries=1
    )
    # scikit-learn's dictionary, then the exact lasso coding on it
    np.testing.assert_array_equal(code, dict_learning._lasso_code(before, dictionary, 1.0, 1000))
    np.testing.assert_array_equal(x, before)
    assert peak < 0.5 * x.nbytes, (peak, x.nbytes)
    assert len(permuted) == (0 if replayed else 2)


def _scratch(tmp_path, data, block_bytes):
    """``data`` (N, V) written to a scratch stack a few rows at a time, as the subjects' sink."""
    from lazyconn.decomposition._stack import ScratchStack

    stack = ScratchStack(tmp_path / "stack", data.shape, data.dtype, block_bytes=block_bytes)
    for start in range(0, len(data), 8):
        stack.write_rows(start, data[start : start + 8])
    return stack


@pytest.mark.parametrize("do_cca, width", [(True, 300), (False, 1024), (True, 5000)])
def test_streamed_group_pca_is_sklearns_randomized_svd(rng, tmp_path, do_cca, width):
    """Over column blocks (uneven, aligned with the squares' pieces, one block), the group
    PCA of a scratch stack is scikit-learn's ``randomized_svd`` of the stack held in memory
    (nilearn's call) to float32 rounding, and leaves the generator where it leaves it; the
    stack is never held."""
    from sklearn.utils.extmath import randomized_svd

    data = _stack(rng, 1000, 3000)
    # 8 planted axes of decreasing strength: components determined to float32 rounding
    axes = rng.standard_normal((1000, 8)) * np.geomspace(400, 50, 8)
    data += (axes @ rng.standard_normal((8, 3000))).astype(np.float32)
    stack = _scratch(tmp_path, data, width * 1000 * 4)
    assert stack.width == min(width, 3000)
    np.testing.assert_array_equal(stack.read(), data)
    scaled = data.copy(order="F")
    if do_cca:
        norms = np.sqrt(np.sum(data**2, axis=1))
        scaled /= norms[:, None]
    ours, theirs = np.random.RandomState(7), np.random.RandomState(7)
    (components, variance), peak = _traced_peak(
        lambda: _multi_pca.group_pca(stack, 8, do_cca, ours), tries=1
    )
    ref, ref_variance, _ = randomized_svd(
        scaled.T, n_components=8, transpose=True, random_state=theirs, n_iter=3
    )
    assert components.dtype == ref.dtype == np.float32 and components.shape == (8, 3000)
    np.testing.assert_allclose(components, ref.T, atol=2e-5 * np.abs(ref).max())
    np.testing.assert_allclose(variance, ref_variance, rtol=2e-5)
    np.testing.assert_array_equal(ours.get_state()[1], theirs.get_state()[1])
    assert ours.get_state()[2] == theirs.get_state()[2]
    # a block, the square sums' piece (at most a block), the (V, 18) test matrix and its
    # products; not the stack (unless it is one block)
    block = stack.width * 1000 * 4
    if block < data.nbytes:
        assert peak < 2 * block + 0.2 * data.nbytes, (peak, block, data.nbytes)
    stack.close()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("method, passes", [("cd", 8), ("lars", 100)])
def test_online_learning_from_the_scratch_stack_is_sklearns(
    rng, tmp_path, monkeypatch, method, passes
):
    """The mini-batch fit replayed from a scratch stack's rows in training order (gathered
    100 at a time by passes over the stack; with cd, from the voxel-major file after 8
    passes) gives scikit-learn's ``dict_learning_online`` dictionary bit for bit (over
    several epochs, a partial last batch), then its coding (cd: the exact coding on it,
    as in memory); the generator ends where scikit-learn's does; the training file is
    deleted."""
    from sklearn.decomposition import dict_learning_online

    from lazyconn.decomposition import _stack as scratch

    if not dict_learning._streams_online():
        pytest.skip("this scikit-learn's mini-batch loop is not replayed")
    monkeypatch.setattr(scratch, "STACK_BLOCK_BYTES", 100 * 48 * 4)  # chunks of 100 rows
    monkeypatch.setattr(scratch, "GATHER_PASSES", passes)
    gathered, written = [], []
    real_gather, real_write = scratch.TrainingRows._gather, scratch.TrainingRows._write_all
    monkeypatch.setattr(
        scratch.TrainingRows,
        "_gather",
        lambda self, *a: gathered.append(a) or real_gather(self, *a),
    )
    monkeypatch.setattr(
        scratch.TrainingRows, "_write_all", lambda self: written.append(1) or real_write(self)
    )
    data = _stack(rng, 48, 410)
    data[:, :30] += 4 * rng.standard_normal((48, 1)).astype(np.float32)
    stack = _scratch(tmp_path, data, 150 * 48 * 4)  # columns in blocks of 150
    x = np.ascontiguousarray(data.T)  # (V, N), as the fit passes it
    init = rng.standard_normal((6, 48)).astype(np.float32)
    ours, theirs = np.random.RandomState(3), np.random.RandomState(3)
    epochs = 3 if method == "cd" else 2  # lars's coding is slow
    kw = dict(alpha=1.0, batch_size=64, method=method, dict_init=init, max_iter=epochs)
    code = dict_learning._dict_learning_online(stack.T, 6, **kw, verbose=0, random_state=ours)
    ref, dictionary = dict_learning_online(
        x,
        6,
        **kw,
        verbose=0,
        return_code=True,
        shuffle=True,
        n_jobs=1,
        random_state=theirs,
    )
    assert code.dtype == np.float32 and code.shape == (410, 6) and np.count_nonzero(code)
    if method == "cd":
        np.testing.assert_array_equal(code, dict_learning._lasso_code(x, dictionary, 1.0, 1000))
    else:
        np.testing.assert_allclose(code, ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(ours.get_state()[1], theirs.get_state()[1])
    # 6 chunks an epoch; with cd the file takes over after 8 passes
    assert (len(gathered), len(written)) == ((8, 1) if passes == 8 else (6 * epochs, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack"]
    stack.close()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_online_learning_reads_the_stack_back_for_unchecked_sklearn(rng, tmp_path, monkeypatch):
    """A scikit-learn whose mini-batch loop is not checked runs its own ``fit`` on the stack
    read back whole: the same code as ``dict_learning_online`` on the stack in memory."""
    from sklearn.decomposition import dict_learning_online

    from lazyconn.decomposition._stack import ScratchStack

    monkeypatch.setattr(dict_learning, "SHUFFLE_IN_PLACE_VERSIONS", set())
    reads = []
    real_read = ScratchStack.read
    monkeypatch.setattr(ScratchStack, "read", lambda self: reads.append(1) or real_read(self))
    data = _stack(rng, 24, 300)
    stack = _scratch(tmp_path, data, 100 * 24 * 4)
    init = rng.standard_normal((4, 24)).astype(np.float32)
    kw = dict(alpha=1.0, batch_size=50, method="lars", dict_init=init, random_state=0)
    code = dict_learning._dict_learning_online(stack.T, 4, **kw, max_iter=2, verbose=0)
    ref = dict_learning_online(
        np.ascontiguousarray(data.T),
        4,
        **kw,
        max_iter=2,
        verbose=0,
        return_code=True,
        shuffle=True,
        n_jobs=1,
    )[0]
    assert reads == [1]
    np.testing.assert_array_equal(code, ref)
    stack.close()
