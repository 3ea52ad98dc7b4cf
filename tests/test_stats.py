"""lazyconn.stats: lazy t-tests equal scipy's on unevenly chunked data, in one read pass."""

import warnings

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from lazyconn import stats
from lazyconn.exceptions import (
    DimensionError,
    GridMismatchError,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.image import LazyImage, RunArray, get_data, index_img
from lazyconn.ops import stats as ostats
from lazyconn.testing.imaging import grid_affine, inaccessible_image
from lazyconn.testing.laziness import raise_if_dask_computes

# Uneven chunks on every axis, three blocks along the tested (last) axis.
CHUNKS = ((3, 4), (5, 3), (2, 4, 3), (7, 13, 20))
LABELS = np.array(["face", "house", "rest", "face", "house"] * 8)


@pytest.fixture(autouse=True)
def _synchronous():
    """Tiny arrays with hundreds of tasks: threads only add scheduling overhead."""
    with dask.config.set(scheduler="synchronous"):
        yield


def _scipy(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's precision-loss warning on constant voxels
        return func(*args, **kwargs)


def _assert_equal_result(result, expected, rtol=1e-10, atol=0.0):
    statistic, pvalue, df = dask.compute(result.statistic, result.pvalue, result.df)
    np.testing.assert_allclose(statistic, expected.statistic, rtol=rtol, atol=atol, equal_nan=True)
    np.testing.assert_allclose(pvalue, expected.pvalue, rtol=rtol, atol=1e-300, equal_nan=True)
    np.testing.assert_allclose(df, expected.df, rtol=rtol, equal_nan=True)
    assert statistic.dtype == np.asarray(expected.statistic).dtype


@pytest.fixture
def data(rng):
    """(7, 8, 9, 40) float64 with planted edge cases: NaN, constant and split voxels."""
    x = rng.normal(size=(7, 8, 9, 40))
    x[..., LABELS == "face"] += np.linspace(0, 1.5, 9)[:, None]  # effects of several sizes
    x[0, 0, 0, 3] = np.nan  # one NaN
    x[1, 1, 1] = 5.0  # constant: t = 0 / 0 -> NaN
    x[2, 2, 2] = np.where(LABELS == "face", 3.0, 4.0)  # constant per condition: t = -inf
    x[3, 3, 3, LABELS == "face"] = np.nan  # a whole condition missing
    x[4, 4, 4, ::3] = np.nan  # NaNs across time blocks
    return x


@pytest.mark.parametrize("equal_var", [True, False])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_ttest_ind_equals_scipy(data, equal_var, nan_policy):
    x = da.from_array(data, chunks=CHUNKS)
    face, house = LABELS == "face", LABELS == "house"
    results, expected = [], []
    for alternative in ("two-sided", "less", "greater"):
        kwargs = dict(equal_var=equal_var, alternative=alternative, nan_policy=nan_policy)
        results.append(stats.ttest_ind(x[..., face], x[..., house], axis=-1, **kwargs))
        expected.append(
            _scipy(sstats.ttest_ind, data[..., face], data[..., house], axis=-1, **kwargs)
        )
    for result, exp in zip(results, expected, strict=True):
        _assert_equal_result(result, exp)


def test_ttest_ind_edge_voxels_as_scipy(data):
    x = da.from_array(data, chunks=CHUNKS)
    t, p = dask.compute(
        *stats.ttest_ind(x[..., LABELS == "face"], x[..., LABELS == "house"], axis=-1)
    )
    assert np.isnan(t[0, 0, 0]) and np.isnan(p[0, 0, 0])  # NaN propagates
    assert np.isnan(t[1, 1, 1]) and np.isnan(p[1, 1, 1])  # constant voxel
    assert t[2, 2, 2] == -np.inf and p[2, 2, 2] == 0.0  # constant, different means


def test_ttest_ind_float32_keeps_scipys_dtype(data):
    x32 = np.nan_to_num(data).astype(np.float32)
    a, b = x32[..., LABELS == "face"], x32[..., LABELS == "rest"]
    result = stats.ttest_ind(da.from_array(a, chunks=(*CHUNKS[:3], 8)), b, axis=-1)
    expected = _scipy(sstats.ttest_ind, a, b, axis=-1)
    # float64 accumulation against scipy's float32: equal to float32 rounding.
    _assert_equal_result(result, expected, rtol=2e-5, atol=1e-6)
    exact = _scipy(sstats.ttest_ind, a.astype(np.float64), b.astype(np.float64), axis=-1)
    finite = np.isfinite(exact.statistic)
    err_lazy = np.abs(result.statistic.compute()[finite] - exact.statistic[finite]).max()
    err_scipy = np.abs(expected.statistic[finite] - exact.statistic[finite]).max()
    assert err_lazy <= err_scipy


@pytest.mark.parametrize("axis", [0, 1, None])
def test_ttest_ind_other_axes_and_numpy_inputs(rng, axis):
    a, b = rng.normal(size=(12, 5, 3)), rng.normal(0.3, 2.0, size=(12, 5, 3))
    if axis == 1:
        b = rng.normal(size=(12, 7, 3))
    result = stats.ttest_ind(a, da.from_array(b, chunks=5), axis=axis, equal_var=False)
    _assert_equal_result(result, _scipy(sstats.ttest_ind, a, b, axis=axis, equal_var=False))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_ttest_1samp_equals_scipy(data, nan_policy):
    x = da.from_array(data, chunks=CHUNKS)
    for alternative in ("two-sided", "less", "greater"):
        kwargs = dict(alternative=alternative, nan_policy=nan_policy)
        result = stats.ttest_1samp(x, 0.2, axis=-1, **kwargs)
        _assert_equal_result(result, _scipy(sstats.ttest_1samp, data, 0.2, axis=-1, **kwargs))


def test_ttest_1samp_popmean_array(data, rng):
    popmean = rng.normal(size=(*data.shape[:3], 1))
    result = stats.ttest_1samp(da.from_array(data, chunks=CHUNKS), popmean, axis=-1)
    _assert_equal_result(result, _scipy(sstats.ttest_1samp, data, popmean, axis=-1))


def test_nan_policy_raise_raises_at_compute(data):
    result = stats.ttest_1samp(
        da.from_array(data, chunks=CHUNKS), 0.0, axis=-1, nan_policy="raise"
    )
    with pytest.raises(ValueError, match="The input contains nan values"):
        result.statistic.compute()
    clean = stats.ttest_1samp(np.nan_to_num(data), 0.0, axis=-1, nan_policy="raise")
    _assert_equal_result(clean, _scipy(sstats.ttest_1samp, np.nan_to_num(data), 0.0, axis=-1))


def test_moments_merge_is_stable_for_large_offsets(rng):
    # A float64 running sum of x and x**2 would lose every digit here; the pairwise merge
    # of two-pass block moments keeps scipy's (two-pass) answer.
    x = 1e8 + rng.normal(size=(3, 60))
    blocks = da.from_array(x, chunks=(3, (10, 25, 25)))
    moments = ostats.time_moments(blocks).compute()
    np.testing.assert_allclose(moments[:, 1], x.mean(axis=-1), rtol=1e-15)
    np.testing.assert_allclose(moments[:, 2] / 59, x.var(axis=-1, ddof=1), rtol=1e-8)


class _CountingArray:
    """An array that counts the reads of each chunk."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads = {}

    def __getitem__(self, key):
        where = tuple((k.start, k.stop) for k in key)
        self.reads[where] = self.reads.get(where, 0) + 1
        return self.array[key]


def test_one_read_pass_no_rechunk(data):
    source = _CountingArray(np.nan_to_num(data))
    x = da.from_array(source, chunks=CHUNKS, asarray=False, meta=np.empty((0,) * 4))
    result = stats.ttest_ind(x[..., LABELS == "face"], x[..., LABELS == "house"], axis=-1)
    layers = result.statistic.__dask_graph__().layers
    assert not any("rechunk" in name for name in layers)
    result.compute()
    n_chunks = int(np.prod([len(c) for c in CHUNKS]))
    assert len(source.reads) == n_chunks
    assert set(source.reads.values()) == {1}


def _run_array(x, chunks=CHUNKS):
    """``get_data(img, compute=False)`` of a run: a RunArray (uneven chunks, 3 time blocks)."""
    return get_data(LazyImage(da.from_array(x, chunks=chunks), grid_affine()), compute=False)


@pytest.mark.parametrize("equal_var", [True, False])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_ttest_ind_of_one_runs_volumes_equals_scipy(data, equal_var, nan_policy):
    # The seed's form: two selections of one run, reduced together from the run's chunks.
    run = _run_array(data)
    assert isinstance(run, RunArray)
    face = pd.Series(LABELS) == "face"  # a labels-file column, as in the seed
    house = np.flatnonzero(LABELS == "house") - 40  # negative indices
    for alternative in ("two-sided", "less", "greater"):
        kwargs = dict(equal_var=equal_var, alternative=alternative, nan_policy=nan_policy)
        result = stats.ttest_ind(run[..., face], run[:, :, :, house], axis=-1, **kwargs)
        expected = _scipy(sstats.ttest_ind, data[..., face], data[..., house], axis=-1, **kwargs)
        _assert_equal_result(result, expected)
    t, p = dask.compute(*stats.ttest_ind(run[..., face], run[..., house], axis=-1))
    assert np.isnan(t[1, 1, 1]) and t[2, 2, 2] == -np.inf and p[2, 2, 2] == 0.0


def test_ttest_ind_of_one_runs_volumes_float32(data):
    x32 = np.nan_to_num(data).astype(np.float32)
    run = _run_array(x32)
    face, rest = LABELS == "face", LABELS == "rest"
    result = stats.ttest_ind(run[..., face], run[..., rest], axis=-1)
    expected = _scipy(sstats.ttest_ind, x32[..., face], x32[..., rest], axis=-1)
    _assert_equal_result(result, expected, rtol=2e-5, atol=1e-6)
    exact = _scipy(
        sstats.ttest_ind, x32[..., face].astype(float), x32[..., rest].astype(float), axis=-1
    )
    finite = np.isfinite(exact.statistic)
    err_lazy = np.abs(result.statistic.compute()[finite] - exact.statistic[finite]).max()
    err_scipy = np.abs(expected.statistic[finite] - exact.statistic[finite]).max()
    assert err_lazy <= err_scipy


def test_ttest_of_one_runs_volumes_is_one_task_per_chunk(data):
    source = _CountingArray(np.nan_to_num(data))
    x = da.from_array(source, chunks=CHUNKS, asarray=False, meta=np.empty((0,) * 4))
    run = RunArray.of(x)
    # only volumes of the first two time blocks (0-6, 7-19): the third block is not read
    first, second = np.arange(0, 12, 2), np.arange(1, 12, 2)
    result = stats.ttest_ind(run[..., first], run[..., second], axis=-1)
    graph = result.pvalue.__dask_graph__()
    # the run's chunks (or its time blocks) feed the moments kernel: no per-sample copy
    users = {name for name, deps in graph.dependencies.items() if x.name in deps}
    assert len(users) == 2 and all(name.startswith("blocks") for name in users)
    assert all(
        name.startswith("lazyconn-moments")
        for name, deps in graph.dependencies.items()
        if deps & users
    )
    result.compute()
    n_spatial = int(np.prod([len(c) for c in CHUNKS[:3]]))
    assert len(source.reads) == 2 * n_spatial and set(source.reads.values()) == {1}
    expected = _scipy(
        sstats.ttest_ind,
        np.nan_to_num(data)[..., first],
        np.nan_to_num(data)[..., second],
        axis=-1,
    )
    _assert_equal_result(result, expected)
    one_run = RunArray.of(da.from_array(np.nan_to_num(data), chunks=(*CHUNKS[:3], 40)))
    one = stats.ttest_1samp(one_run[..., second], 0.1, axis=-1)
    graph = one.pvalue.__dask_graph__()
    users = {n for n, deps in graph.dependencies.items() if one_run.name in deps}
    assert len(users) == 1 and users.pop().startswith("lazyconn-moments")
    _assert_equal_result(
        one, _scipy(sstats.ttest_1samp, np.nan_to_num(data)[..., second], 0.1, axis=-1)
    )


def test_run_array_remembers_volume_selections_only():
    from lazyconn.image._runarray import volume_selection

    run = RunArray.of(da.zeros((2, 3, 4, 10), chunks=(1, 3, 4, 10)))
    mask = np.arange(10) % 3 == 0
    for index, volumes in [
        ((Ellipsis, mask), [0, 3, 6, 9]),
        ((slice(None),) * 3 + (pd.Series(mask),), [0, 3, 6, 9]),
        ((Ellipsis, [-1, 2]), [9, 2]),
        ((Ellipsis, slice(2, 8, 3)), [2, 5]),
    ]:
        selected = volume_selection(run[index])
        assert selected.run.name == run.name
        np.testing.assert_array_equal(selected.indices, volumes)
    # anything else is dask's plain indexing: no selection is remembered
    for index in [(0,), (Ellipsis, 3), (slice(0, 1), Ellipsis, mask), (Ellipsis, mask, None)]:
        assert volume_selection(run[index]) is None
    assert volume_selection(run + 1) is None and type(run + 1) is da.Array
    assert volume_selection(da.zeros((2, 10))[..., mask]) is None
    # a selection of another run, or of another axis, is tested the usual way
    a = np.random.default_rng(0).normal(size=(2, 3, 4, 10))
    other = RunArray.of(da.from_array(a, chunks=(1, 3, 4, 5)))
    result = stats.ttest_ind(other[..., mask], RunArray.of(da.from_array(a))[..., ~mask], axis=-1)
    _assert_equal_result(result, sstats.ttest_ind(a[..., mask], a[..., ~mask], axis=-1))


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_selection_moments_kernel_equals_moments_of_the_selection(data, order, nan_policy):
    block = np.asarray(data[:3, :4, :5], order=order)
    selections = [np.flatnonzero(LABELS == "face"), np.array([], dtype=int), np.array([4, 4])]
    got = ostats.selection_moments_block(block, selections, nan_policy)
    assert got.shape == (3, 4, 5, 3, 3)
    for i, idx in enumerate(selections):
        expected = ostats.moments_block(np.ascontiguousarray(block[..., idx]), nan_policy)
        np.testing.assert_allclose(got[..., i, :], expected, rtol=1e-13, atol=1e-13)
    finite = block[..., LABELS == "face"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = (np.nanmean if nan_policy == "omit" else np.mean)(finite, axis=-1)
    if nan_policy == "omit":
        mean = np.where(np.isnan(mean), 0.0, mean)  # no volume left: n = 0, mean 0
    np.testing.assert_allclose(got[..., 0, 1], mean, rtol=1e-13, equal_nan=True)


def test_building_is_lazy():
    img = inaccessible_image((7, 8, 9, 20))
    labels = np.array(["a", "b"] * 10)
    with raise_if_dask_computes():
        t_img, p_img = stats.ttest_ind_img(img, labels, "a", "b")
        stats.ttest_1samp_img(img, 1.0, labels=labels, condition="b")
        face = index_img(img, labels == "a")
        index_img(img, pd.Series(labels) == "b")
    assert face.shape == (7, 8, 9, 10)
    assert t_img.shape == p_img.shape == (7, 8, 9)


# --- image level -----------------------------------------------------------------------------
def _run(x, affine=None):
    affine = grid_affine() if affine is None else affine
    return LazyImage(da.from_array(x.astype(np.float32), chunks=(*CHUNKS[:3], x.shape[3])), affine)


def test_ttest_ind_img_one_run_equals_scipy(data):
    x = np.nan_to_num(data)
    labels = pd.Series(LABELS)  # a column of a labels file
    t_img, p_img = stats.ttest_ind_img(_run(x), labels, "face", "house", equal_var=False)
    x32 = x.astype(np.float32)
    expected = _scipy(
        sstats.ttest_ind,
        x32[..., LABELS == "face"],
        x32[..., LABELS == "house"],
        axis=-1,
        equal_var=False,
    )
    assert t_img.dtype == np.float32 and t_img.shape == x.shape[:3]
    np.testing.assert_allclose(t_img.data.compute(), expected.statistic, rtol=2e-5)
    np.testing.assert_allclose(p_img.data.compute(), expected.pvalue, rtol=1e-4, atol=1e-30)
    np.testing.assert_array_equal(t_img.affine, grid_affine())


def test_ttest_img_several_runs_equal_scipy_on_concatenation(data, rng):
    runs = [np.nan_to_num(data), rng.normal(size=(*data.shape[:3], 25))]
    labels = [LABELS, np.array(["face", "house", "house", "rest", "face"] * 5)]
    whole = np.concatenate([r.astype(np.float32).astype(np.float64) for r in runs], axis=-1)
    flat = np.concatenate(labels)
    result = stats.ttest_ind_img([_run(r) for r in runs], labels, "house", "face")
    expected = sstats.ttest_ind(whole[..., flat == "house"], whole[..., flat == "face"], axis=-1)
    np.testing.assert_allclose(result.statistic.data.compute(), expected.statistic, rtol=1e-5)
    np.testing.assert_allclose(result.df.data.compute(), expected.df)
    # the same with one label sequence over all volumes
    again = stats.ttest_ind_img([_run(r) for r in runs], flat, "house", "face")
    np.testing.assert_array_equal(again.statistic.data.compute(), result.statistic.data.compute())
    one = stats.ttest_1samp_img([_run(r) for r in runs], 0.1, labels=flat, condition="rest")
    exp1 = sstats.ttest_1samp(whole[..., flat == "rest"], 0.1, axis=-1)
    np.testing.assert_allclose(one.pvalue.data.compute(), exp1.pvalue, rtol=1e-4)


def test_ttest_1samp_img_every_volume_and_map_popmean(data, rng):
    x = np.nan_to_num(data)
    popmean = rng.normal(size=x.shape[:3])
    pm_img = nib.Nifti1Image(popmean, grid_affine())
    result = stats.ttest_1samp_img(_run(x), pm_img).compute()
    x64 = x.astype(np.float32).astype(np.float64)
    expected = _scipy(sstats.ttest_1samp, x64, popmean[..., None], axis=-1)
    np.testing.assert_allclose(result.statistic.get_fdata(), expected.statistic, rtol=1e-5)
    assert isinstance(result.pvalue, nib.Nifti1Image)


# --- bad input -------------------------------------------------------------------------------
def test_labels_length_must_match_volumes(data):
    with pytest.raises(ParameterError, match=r"labels has 39 entries but imgs has 40 volumes"):
        stats.ttest_ind_img(_run(data), LABELS[:39], "face", "house")
    with pytest.raises(
        ParameterError, match=r"labels\[1\] has 40 entries but run imgs\[1\] has 20"
    ):
        stats.ttest_ind_img([_run(data), _run(data[..., :20])], [LABELS, LABELS], "face", "house")


def test_condition_needs_two_volumes(data):
    labels = LABELS.copy()
    labels[labels == "rest"] = "face"
    labels[5] = "rest"
    with pytest.raises(
        ParameterError, match=r"condition2='rest' labels 1 volume\(s\); expected at"
    ):
        stats.ttest_ind_img(_run(data), labels, "face", "rest")
    with pytest.raises(ParameterError, match=r"condition1='cat' labels 0 volume.*'face', 'house'"):
        stats.ttest_ind_img(_run(data), labels, "cat", "face")
    with pytest.raises(ParameterError, match=r"condition='rest' labels 1 volume"):
        stats.ttest_1samp_img(_run(data), labels=labels, condition="rest")
    with pytest.raises(ParameterError, match="labels were given without condition"):
        stats.ttest_1samp_img(_run(data), labels=labels)


def test_image_inputs_checked(data):
    with pytest.raises(DimensionError, match=r"expected a 4-D image"):
        stats.ttest_ind_img(_run(data).to_nifti().slicer[..., 0], LABELS, "face", "house")
    other = grid_affine()
    other[0, 3] += 1
    with pytest.raises(
        GridMismatchError, match=r"imgs\[0\].*imgs\[1\].*not on the same voxel grid"
    ):
        stats.ttest_ind_img([_run(data), _run(data, other)], [LABELS, LABELS], "face", "house")
    with pytest.raises(DimensionError, match=r"popmean has shape \(7, 8, 9, 40\)"):
        stats.ttest_1samp_img(_run(data), _run(data))


def test_array_arguments_checked(data):
    a = da.from_array(data, chunks=CHUNKS)
    with pytest.raises(ParameterError, match=r"nan_policy='skip' is not valid; expected one of"):
        stats.ttest_ind(a, a, nan_policy="skip")
    with pytest.raises(ParameterError, match=r"alternative='bigger' is not valid"):
        stats.ttest_1samp(a, 0.0, alternative="bigger")
    with pytest.raises(ParameterError, match=r"trim=0.2 is not supported by the lazy t-test"):
        stats.ttest_ind(a, a, trim=0.2)
    with pytest.raises(ParameterError, match=r"method='perm' is not supported"):
        stats.ttest_ind(a, a, method="perm")
    with pytest.raises(ParameterError, match=r"axis=4 is out of bounds for a with 4 dimensions"):
        stats.ttest_ind(a, a, axis=4)
    with pytest.raises(DimensionError, match=r"differ outside the tested axis"):
        stats.ttest_ind(a, a[:3], axis=-1)
    with pytest.raises(DimensionError, match=r"popmean has shape \(7, 8\); expected a number"):
        stats.ttest_1samp(a, np.zeros((7, 8)), axis=-1)


# --- computing maps in batches -----------------------------------------------------------------
def test_compute_maps_in_batches_equals_one_compute(data):
    from lazyconn.image import mean_img, smooth_img

    run = smooth_img(_run(np.nan_to_num(data)), 6.0)
    t_img, p_img = stats.ttest_ind_img(run, LABELS, "face", "house")
    mean = mean_img(run)
    expected = dask.compute(t_img.data, p_img.data, mean.data)
    # 1 kB of run per batch: one block-row (x-block, y-block) at a time
    with raise_if_dask_computes(max_computes=100) as counter:
        maps = stats.compute_maps(t_img, p_img, mean, run=run, batch_bytes=1000)
    assert counter.total_computes == len(CHUNKS[0]) * len(CHUNKS[1])
    for got, exp in zip(maps, expected, strict=True):
        np.testing.assert_array_equal(got, exp)
    for got, exp in zip(stats.compute_maps(t_img, mean), expected[::2], strict=True):
        np.testing.assert_array_equal(got, exp)


def test_compute_maps_bad_input(data):
    run = _run(data)
    with pytest.raises(ParameterTypeError, match=r"maps\[0\] is ndarray.*expected 3-D dask"):
        stats.compute_maps(np.zeros(3), run=run)
    with pytest.raises(DimensionError, match=r"maps\[0\] has shape \(7, 8, 8\); expected the"):
        stats.compute_maps(run.data[:, :, :8, 0], run=run)
    with pytest.raises(ParameterTypeError, match=r"run is ndarray; expected a 4-D"):
        stats.compute_maps(run.data[..., 0], run=np.zeros((7, 8, 9, 2)))


def test_result_pickles_and_unpacks_like_scipy(data):
    import pickle

    result = stats.ttest_1samp(da.from_array(data, chunks=CHUNKS), 0.0, axis=-1)
    again = pickle.loads(pickle.dumps(result))
    statistic, pvalue = again
    assert len(again) == 2 and again.df.shape == statistic.shape == data.shape[:3]
    np.testing.assert_array_equal(pvalue.compute(), result.pvalue.compute())
