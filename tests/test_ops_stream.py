"""The streamed per-subject pass (ops.voxels.VoxelStream): scipy/nilearn on small runs with
uneven chunks, what it holds (planted by the chunk geometry), and the reductions it feeds."""

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from scipy import linalg, ndimage
from sklearn.utils.extmath import svd_flip

from lazyconn import signal
from lazyconn.decomposition._base import reduce_run, subject_random_states
from lazyconn.exceptions import ParameterError
from lazyconn.image import load
from lazyconn.maskers import MultiNiftiMasker, NiftiMasker
from lazyconn.ops import spatial
from lazyconn.ops.reduction import GramAccumulator, project_columns
from lazyconn.ops.voxels import VoxelStream, smooth_gather, stream_order
from lazyconn.testing.imaging import brain_blob, grid_affine
from lazyconn.testing.reference import assert_smoothing_close, quiet, smoothed_in_mask


def _assemble(stream):
    """The (T, V) matrix a stream's pieces make up, every column written exactly once."""
    out = np.full(stream.shape, np.nan, dtype=stream.dtype)
    seen = np.zeros(stream.shape[1], dtype=int)
    for cols, values in stream:
        assert values.shape == (stream.shape[0], cols.size) and values.dtype == stream.dtype
        out[:, cols] = values
        seen[cols] += 1
    assert (seen == 1).all()
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, chunks, sigmas",
    [
        # uneven blocks, some thinner than the kernel's half-width
        ((13, 17, 11, 6), ((5, 8), (4, 6, 7), (11,), (6,)), [1.2, 0.8, 1.0]),
        ((14, 9, 12, 5), ((3, 3, 3, 5), (9,), (2, 9, 1), (5,)), [1.0, 0.0, 2.0]),
        # one block
        ((9, 8, 7, 4), ((9,), (8,), (7,), (4,)), [1.0, 1.0, 1.0]),
    ],
)
@pytest.mark.parametrize("order", ["C", "F"])
def test_stream_equals_scipy_smoothing_then_mask(rng, shape, chunks, sigmas, dtype, order):
    x = (100 + 10 * rng.standard_normal(shape)).astype(dtype)
    x[1, 2, 3, 0] = np.nan  # NaN and inf count as 0, as nilearn's smoothing does
    x[-1, -1, -1, -1] = np.inf
    mask = rng.random(shape[:3]) > 0.4
    expected = smoothed_in_mask(x, mask, sigmas)
    arr = da.from_array(x, chunks=chunks)
    arr = arr.map_blocks(np.asfortranarray if order == "F" else np.ascontiguousarray)
    stream = VoxelStream(arr, mask, sigmas)
    assert stream.shape == expected.shape and stream.dtype == dtype
    assert_smoothing_close(_assemble(stream), expected)
    assert_smoothing_close(_assemble(stream), expected)  # a second pass reads it again


def test_stream_without_smoothing_is_the_masked_run(rng):
    x = rng.standard_normal((7, 8, 9, 4))
    mask = rng.random((7, 8, 9)) > 0.5
    stream = VoxelStream(da.from_array(x, chunks=((3, 4), (5, 3), (2, 4, 3), (4,))), mask)
    np.testing.assert_array_equal(_assemble(stream), x[mask].T)


def test_stream_order_has_the_axis_of_most_blocks_slowest():
    order = stream_order((2, 4, 3))
    assert len(order) == 24 and len(set(order)) == 24
    assert [o[1] for o in order[:6]] == [0] * 6  # axis 1 (4 blocks) slowest
    assert order[:4] == [(0, 0, 0), (1, 0, 0), (0, 0, 1), (1, 0, 1)]  # then axis 2, axis 0


def test_what_is_held_is_the_voxels_waiting_for_the_next_block(rng):
    """Planted geometry: 6 blocks of 10 voxels along x, a half-width of 3 along x only.
    The voxels 0-2 of a block also need the block before, 7-9 the block after, 3-6 only
    their own. While block b is read, open are: the last 3 planes of b-1 and the first 7
    of b (finished by b), the last 3 of b (waiting for b+1) and the first 3 of b+1
    (started by b): 16 of 60 planes in 5 groups, whatever the number of blocks (whole-block
    accumulators would hold blocks b-1, b and b+1: 30 planes)."""
    n_y, n_z, n_t = 4, 5, 7
    sigma = 0.75  # half-width int(4 * 0.75 + 0.5) = 3
    assert spatial.gaussian_halfwidth(sigma) == 3
    x = rng.standard_normal((60, n_y, n_z, n_t)).astype(np.float32)
    mask = np.ones((60, n_y, n_z), dtype=bool)
    stream = VoxelStream(da.from_array(x, chunks=(10, n_y, n_z, n_t)), mask, [sigma, 0, 0])
    got = _assemble(stream)
    n_open, held = stream.peak_open
    assert n_open == 5
    assert held == 16 * n_y * n_z * n_t * 4
    expected = ndimage.gaussian_filter1d(x.astype(np.float64), sigma, axis=0)[mask].T
    assert_smoothing_close(got, expected)


def test_a_block_reaching_no_masked_voxel_is_never_read(rng):
    x = rng.standard_normal((20, 6, 5, 3)).astype(np.float32)
    mask = np.zeros((20, 6, 5), dtype=bool)
    mask[2:5, 1:3, 1:3] = True
    chunks = (5, 6, 5, 3)
    # blocks 2 and 3 along x (voxels 10-19) are beyond the kernel's reach (half-width 3)
    arr = da.from_array(x, chunks=chunks)
    arr = arr.map_blocks(_refuse_far_blocks, dtype=arr.dtype)
    got = _assemble(VoxelStream(arr, mask, [0.75, 0.75, 0.75]))
    expected = ndimage.gaussian_filter(x.astype(np.float64), [0.75, 0.75, 0.75, 0])[mask].T
    assert_smoothing_close(got, expected)


def _refuse_far_blocks(block, block_info=None):
    if block_info[0]["array-location"][0][0] >= 10:
        raise AssertionError("a block out of the kernel's reach was read")
    return block


@pytest.mark.parametrize("piece_columns", [None, 3])
def test_gram_accumulator_and_projection_equal_the_products(rng, monkeypatch, piece_columns):
    """Gram matrix and projection of float32 columns, copied to float64 a piece at a time
    (one reused buffer; here also 3 columns per piece), against numpy's float64 products."""
    from lazyconn.ops import reduction

    if piece_columns is not None:
        monkeypatch.setattr(reduction, "PIECE_BYTES", 8 * 11 * piece_columns)
    x = np.asfortranarray(rng.standard_normal((11, 40)).astype(np.float32))
    acc = GramAccumulator(11)
    for piece in np.array_split(np.arange(40), [3, 4, 30]):
        acc.add(x[:, piece])
    acc.add(x[:, :0])
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(acc.result(), x64 @ x64.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(acc.result(), acc.result().T)
    c = rng.standard_normal((4, 11))
    np.testing.assert_allclose(project_columns(c, x), c @ x64, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(project_columns(c, x64), c @ x64, rtol=1e-12, atol=1e-12)


def test_streams_share_a_plan_only_with_the_same_mask_chunks_and_kernel(rng):
    """The plan (a pure function of the mask, the chunks and the kernel) is made once for
    every subject's stream; another mask of the same shape, other chunks or another kernel
    get their own, and every stream equals scipy's smoothing then masking."""
    shape, chunks, sigmas = (12, 10, 9, 4), ((5, 7), (6, 4), (9,), (4,)), [0.8, 0.8, 0.8]
    x = (100 + 10 * rng.standard_normal(shape)).astype(np.float32)
    y = (50 + 5 * rng.standard_normal(shape)).astype(np.float32)
    m1 = rng.random(shape[:3]) > 0.4
    m2 = m1.copy()
    m2[3, 4, 2] = not m2[3, 4, 2]  # one voxel differs
    arr, arr_y = da.from_array(x, chunks=chunks), da.from_array(y, chunks=chunks)
    first, second = VoxelStream(arr, m1, sigmas), VoxelStream(arr_y, m1, sigmas)
    assert second.plan() is first.plan()
    others = [
        (VoxelStream(arr, m2, sigmas), x, m2, sigmas),
        (VoxelStream(arr.rechunk((6, 5, 9, 4)), m1, sigmas), x, m1, sigmas),
        (VoxelStream(arr, m1, [1.2, 0.8, 0.8]), x, m1, [1.2, 0.8, 0.8]),
    ]
    for stream, *_ in others:
        assert stream.plan() is not first.plan()
    for stream, data, mask, sig in [(first, x, m1, sigmas), (second, y, m1, sigmas), *others]:
        assert_smoothing_close(_assemble(stream), smoothed_in_mask(data, mask, sig))


def _reference_reduction(x, k):
    """nilearn's exact path: SVD of Xᵀ, svd_flip, S · Uᵀ."""
    u, s, vt = linalg.svd(x.T.astype(np.float64), full_matrices=False)
    u, vt = svd_flip(u, vt)
    return (u[:, :k] * s[:k]).T


@pytest.mark.parametrize("keep_bytes", [0, 2**30])
def test_reduce_run_on_a_stream_equals_exact_svd_and_the_graph(rng, keep_bytes):
    shape = (12, 10, 9, 30)
    signal_ = rng.standard_normal((shape[3], 3)) @ rng.standard_normal((3, np.prod(shape[:3])))
    x = (signal_.T.reshape(shape) + rng.standard_normal(shape)).astype(np.float32)
    mask = rng.random(shape[:3]) > 0.3
    sigmas = [0.8, 1.0, 0.6]
    arr = da.from_array(x, chunks=((5, 7), (3, 7), (9,), (30,)))
    stream = VoxelStream(arr, mask, sigmas)
    smoothed = np.stack(
        [ndimage.gaussian_filter(x[..., t].astype(np.float64), sigmas) for t in range(30)],
        axis=-1,
    )[mask].T
    got = reduce_run(stream, 5, keep_bytes)
    assert got.dtype == np.float32 and got.shape == (5, mask.sum())
    np.testing.assert_allclose(got, _reference_reduction(smoothed, 5), rtol=1e-3, atol=1e-3)
    # randomized: the same as the graph's reduction of the same run
    state = subject_random_states(0, int(mask.sum()), [30], 2)[0]
    graph = smooth_gather(arr, mask, sigmas, target_bytes=30 * 4 * 100)
    np.testing.assert_allclose(
        reduce_run(stream, 2, keep_bytes, state),
        reduce_run(graph, 2, keep_bytes, state),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.fixture
def small_run(rng):
    """A 4-D run (nibabel) with a brain-like mask, and confounds."""
    shape = (11, 13, 10, 40)
    affine = grid_affine()
    mask = brain_blob(shape[:3], 0.45)
    x = 200 + 20 * rng.standard_normal(shape)
    x += np.linspace(0, 30, shape[3])  # a drift
    confounds = rng.standard_normal((shape[3], 3))
    img = nib.Nifti1Image(x.astype(np.float32), affine)
    return img, nib.Nifti1Image(mask.astype(np.uint8), affine), confounds


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        {"smoothing_fwhm": 6.0, "standardize": "zscore_sample", "detrend": True},
        {"smoothing_fwhm": None, "standardize": "zscore_sample", "high_variance_confounds": True},
        {"smoothing_fwhm": 5.0, "low_pass": 0.1, "t_r": 2.0, "standardize": None},
    ],
)
def test_masker_stream_equals_nilearns_transform(small_run, kw, multi):
    import nilearn.maskers as nm

    img, mask, confounds = small_run
    cls = (MultiNiftiMasker, nm.MultiNiftiMasker) if multi else (NiftiMasker, nm.NiftiMasker)
    ours = cls[0](mask_img=mask, **kw).fit()
    run = load(img).with_data(load(img).data.rechunk((4, 7, 6, 40)))  # uneven blocks
    kept = np.arange(2, 40)
    stream = ours._stream_run(run, confounds=confounds, sample_mask=kept)
    assert stream is not None and stream.shape == (38, ours.n_elements_)
    theirs = cls[1](mask_img=mask, **kw).fit()
    if multi:  # nilearn's multi-run masker takes lists
        (ref,) = quiet(theirs.transform, [img], confounds=[confounds], sample_mask=[kept])
    else:
        ref = quiet(theirs.transform, img, confounds=confounds, sample_mask=kept)
    got = _assemble(stream)
    assert got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_runs_read_in_time_slabs_or_psc_stay_on_the_graph(small_run):
    img, mask, _ = small_run
    run = load(img)
    slabs = run.with_data(run.data.rechunk((11, 13, 10, 10)))  # a .nii.gz's time slabs
    masker = NiftiMasker(mask_img=mask, smoothing_fwhm=6.0).fit()
    assert masker._stream_run(run) is not None
    assert masker._stream_run(slabs) is None
    assert NiftiMasker(mask_img=mask, standardize="psc").fit()._stream_run(run) is None
    assert NiftiMasker(mask_img=mask, smoothing_fwhm="fast").fit()._stream_run(run) is None


def test_column_cleaner_refuses_psc():
    with pytest.raises(ParameterError, match=r"standardize='psc' cannot clean columns apart"):
        signal.column_cleaner(10, np.float32, standardize="psc")
    clean = signal.column_cleaner(10, np.float32, sample_mask=np.arange(1, 10))
    assert clean.n_out == 9 and clean.out_dtype == np.float32


def test_the_reduction_step_streams_and_equals_the_graph_of_time_slabs(small_run, monkeypatch):
    from lazyconn.decomposition._base import ReductionSubject, _ReductionStep

    img, mask, confounds = small_run
    masker = MultiNiftiMasker(mask_img=mask, smoothing_fwhm=6.0, standardize="zscore_sample")
    masker.fit()
    run = load(img)
    slabs = run.with_data(run.data.rechunk((11, 13, 10, 10)))  # a .nii.gz's time slabs
    streamed = []
    stream_run = masker._stream_run

    def spy(*args, **kwargs):
        out = stream_run(*args, **kwargs)
        streamed.append(out is not None)
        return out

    monkeypatch.setattr(masker, "_stream_run", spy)
    state = subject_random_states(0, masker.n_elements_, [40], 4)[0]
    step = _ReductionStep(masker, 4, keep_bytes=0)
    a = step(ReductionSubject("0", run, confounds, rng_state=state))
    b = step(ReductionSubject("0", slabs, confounds, rng_state=state))
    assert streamed == [True, False]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_masker_transform_streams_a_long_run_and_equals_nilearn(small_run, monkeypatch):
    import nilearn.maskers as nm

    from lazyconn import config

    img, mask, confounds = small_run
    kw = {"smoothing_fwhm": 6.0, "standardize": "zscore_sample", "detrend": True}
    masker = MultiNiftiMasker(mask_img=mask, **kw).fit()
    computed = []
    monkeypatch.setattr(VoxelStream, "compute", _spy(VoxelStream.compute, computed))
    short = masker.transform(img, confounds=confounds)
    monkeypatch.setattr(config, "STREAM_RUN_BYTES", 0)  # every run is long
    long = masker.transform([img, img], confounds=[confounds, None])
    assert len(computed) == 2  # the short run went to the graph, both long ones streamed
    ref = quiet(nm.NiftiMasker(mask_img=mask, **kw).fit().transform, img, confounds=confounds)
    for got in (short, long[0]):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    ref = quiet(nm.NiftiMasker(mask_img=mask, **kw).fit().transform, img)
    np.testing.assert_allclose(long[1], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def _spy(method, calls):
    def spy(self, *args, **kwargs):
        calls.append(self)
        return method(self, *args, **kwargs)

    return spy


class _FullDisk:
    """A temporary file on a disk with no room: every write fails as ENOSPC does."""

    def __init__(self, *args, **kwargs):
        self.closed = False

    def write(self, data):
        raise OSError(28, "No space left on device")

    def close(self):
        self.closed = True


@pytest.mark.parametrize("room", [True, False])
def test_a_long_run_is_read_once_its_columns_spilled_to_a_temporary_file(rng, monkeypatch, room):
    import lazyconn.decomposition._base as base

    shape = (10, 9, 8, 25)
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape[:3]) > 0.3
    arr = da.from_array(x, chunks=((4, 6), (5, 4), (8,), (25,)))
    stream = VoxelStream(arr, mask, [0.8, 0.8, 0.8])
    passes = []
    monkeypatch.setattr(VoxelStream, "__iter__", _spy(VoxelStream.__iter__, passes))
    if not room:
        monkeypatch.setattr(base.tempfile, "TemporaryFile", _FullDisk)
    state = subject_random_states(0, int(mask.sum()), [25], 3)[0]
    got = reduce_run(stream, 3, 0, state)
    assert len(passes) == (1 if room else 2)  # read again only when the disk had no room
    kept = reduce_run(da.from_array(stream.compute()), 3, 2**30, state)  # held whole
    np.testing.assert_allclose(got, kept, rtol=1e-5, atol=1e-5 * np.abs(kept).max())
    exact = reduce_run(stream, 3, 0)
    smoothed = np.stack(
        [ndimage.gaussian_filter(x[..., t].astype(np.float64), 0.8) for t in range(25)], axis=-1
    )[mask].T
    np.testing.assert_allclose(exact, _reference_reduction(smoothed, 3), rtol=1e-3, atol=1e-3)


def test_a_local_stores_blocks_are_decoded_a_slab_of_volumes_at_a_time(
    small_run, tmp_path, monkeypatch
):
    """A run from a local store is streamed without decoding any whole chunk (each block
    a few volumes at a time, ChunkSlabs): the same bits as its graph's reads, and
    nilearn's transform."""
    import nilearn.maskers as nm

    from lazyconn.io import _dask, store

    img, mask, confounds = small_run
    path = str(tmp_path / "run.zarr")
    load(img).to_zarr(path, chunks=(6, 7, 10, 40))
    kw = {"smoothing_fwhm": 6.0, "standardize": "zscore_sample"}
    masker = NiftiMasker(mask_img=mask, **kw).fit()
    monkeypatch.setattr(spatial, "SPREAD_SLAB_BYTES", 4 * 12 * 13 * 10 * 7)  # ~7 volumes
    slabs = []
    monkeypatch.setattr(store.ChunkSlabs, "__getitem__", _spy(store.ChunkSlabs.__getitem__, slabs))
    graph = masker._stream_run(path, confounds=confounds)
    graph.reader = None
    expected = _assemble(graph)
    assert not slabs
    monkeypatch.setattr(_dask, "read_chunk", None)  # no whole chunk is decoded
    got = _assemble(masker._stream_run(path, confounds=confounds))
    assert len(slabs) > 8  # blocks x slabs
    np.testing.assert_array_equal(got, expected)
    ref = quiet(nm.NiftiMasker(mask_img=mask, **kw).fit().transform, img, confounds=confounds)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
