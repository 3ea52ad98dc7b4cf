"""Lazy NIfTI reading: values equal nibabel's, header-only open, picklable graphs."""

import pickle
import time
from pathlib import Path

import cloudpickle
import dask
import nibabel as nib
import numpy as np
import pytest

import lazyconn
from lazyconn.io import nifti as nifti_mod
from lazyconn.testing.laziness import raise_if_dask_computes

UNEVEN = (4, 5, 6, 20)  # two uneven chunks per spatial axis of (7, 8, 9, 20)


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
@pytest.mark.parametrize(
    "dtype, slope, inter",
    [
        (np.float32, None, None),
        (np.int16, 0.5, 3.0),
        (np.uint8, 2.0, None),
        (np.float64, None, None),
    ],
)
def test_lazy_equals_nibabel(make_nifti, name, dtype, slope, inter):
    path, ref = make_nifti(name, dtype=dtype, slope=slope, inter=inter)
    img = lazyconn.load(path, chunks=UNEVEN)
    assert img.chunks == ((4, 3), (5, 3), (6, 3), (20,))
    assert img.dtype == ref.dtype  # nibabel's dtype for the scaled data
    out = img.data.compute()
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(img.affine, nib.load(path).affine)
    assert img.t_r == 2.0


def test_gzip_default_chunks_are_time_slabs(make_nifti, monkeypatch):
    path, ref = make_nifti("run.nii.gz", shape=(7, 8, 9, 50))
    frame = 7 * 8 * 9 * 4
    from lazyconn.io import _dask

    monkeypatch.setattr(_dask, "DEFAULT_CHUNK_BYTES", 12 * frame)
    img = lazyconn.load(path)
    assert img.chunks == ((7,), (8,), (9,), (12, 12, 12, 12, 2))
    np.testing.assert_array_equal(img.data.compute(), ref)
    # Any slab, in any order, gives nibabel's values (checkpoints are reused).
    np.testing.assert_array_equal(img.data[..., 30:41].compute(), ref[..., 30:41])
    np.testing.assert_array_equal(img.data[2:5, :, 3, 7:9].compute(), ref[2:5, :, 3, 7:9])


class _CountingInflater:
    """An inflater module (zlib or ISA-L's) that counts decompressors and inflated bytes."""

    def __init__(self, engine):
        self.engine, self.made, self.inflated = engine, 0, 0

    def decompressobj(self, wbits):
        self.made += 1
        return _CountingState(self, self.engine.decompressobj(wbits))


class _CountingState:
    def __init__(self, owner, state):
        self.owner, self.state = owner, state

    def decompress(self, data, max_length=0):
        out = self.state.decompress(data, max_length)
        self.owner.inflated += len(out)
        return out

    def copy(self):
        return _CountingState(self.owner, self.state.copy())

    def __getattr__(self, name):
        return getattr(self.state, name)


def _engines():
    engines = [pytest.param(nifti_mod.zlib, id="zlib")]
    try:
        from isal import isal_zlib
    except ImportError:  # the default install
        return engines
    return [*engines, pytest.param(isal_zlib, id="isal")]


def _count_inflation_in_slabs(monkeypatch, engine, slab_volumes, frame):
    """Runs read in time slabs of ``slab_volumes`` float32 volumes of ``frame`` voxels,
    inflated in small reads by ``engine`` wrapped to count (returned); zlib wrapped too,
    so a test can check it was not used."""
    from lazyconn.io import _dask

    monkeypatch.setattr(_dask, "DEFAULT_CHUNK_BYTES", slab_volumes * frame * 4)
    monkeypatch.setattr(nifti_mod, "READ_BLOCK", 4096)
    counting = _CountingInflater(engine)
    monkeypatch.setattr(nifti_mod, "fast_zlib", counting)
    monkeypatch.setattr(nifti_mod, "zlib", _CountingInflater(nifti_mod.zlib))  # unused
    return counting


@pytest.mark.parametrize("engine", _engines())
def test_gzip_slabs_in_order_inflate_the_file_once(make_nifti, monkeypatch, engine):
    """A pass over the slabs resumes each read where the last stopped: one decompressor,
    every byte inflated once (ISA-L's inflater when installed: its states cannot be copied,
    and none is)."""
    path, ref = make_nifti("run.nii.gz", shape=(7, 8, 9, 60))
    monkeypatch.setattr(nifti_mod, "CHECKPOINT_EVERY", 4096)
    monkeypatch.setattr(nifti_mod, "READ_BLOCK", 512)
    monkeypatch.setattr(nifti_mod, "INFLATE_STEP", 1000)  # output capped mid-block too
    counting = _CountingInflater(engine)
    monkeypatch.setattr(nifti_mod, "fast_zlib", counting)
    nifti = nifti_mod.NiftiFile(path)
    for t in range(0, 60, 7):
        np.testing.assert_array_equal(nifti[:, :, :, t : t + 7], ref[..., t : t + 7])
    assert counting.made == 1
    assert counting.inflated == nifti.offset + nifti.data_nbytes
    index = nifti_mod._gzip_index(nifti.token)
    assert index.cursor is None  # the last slab ended the pass
    # a new pass starts again from the file's start, with the same inflater
    np.testing.assert_array_equal(nifti[:, :, :, :7], ref[..., :7])
    assert counting.made == 2


def test_gzip_reads_out_of_order_resume_from_snapshots(make_nifti, monkeypatch):
    """Slabs read backwards (as dask's order may take them): zlib from the start (its states
    can be copied) saving a snapshot where each slab begins, then every read resumes exactly
    there: the file is inflated once in all (from the start each time: ~5x)."""
    path, ref = make_nifti("run.nii.gz", shape=(7, 8, 9, 60))
    monkeypatch.setattr(nifti_mod, "READ_BLOCK", 512)
    counting = _CountingInflater(nifti_mod.zlib)
    monkeypatch.setattr(nifti_mod, "zlib", counting)
    monkeypatch.setattr(nifti_mod, "fast_zlib", _CountingInflater(nifti_mod.fast_zlib))
    nifti = nifti_mod.NiftiFile(path)
    nifti.slab_volumes = 6  # as nifti_arrays sets it for its time slabs
    frame = 7 * 8 * 9 * 4
    slabs = list(range(0, 60, 6))[::-1]
    for t in slabs:
        np.testing.assert_array_equal(nifti[:, :, :, t : t + 6], ref[..., t : t + 6])
    # one zlib pass from the file's start, for the first read (not ISA-L: it started mid-file)
    assert counting.made == 1 and nifti_mod.fast_zlib.made == 0
    index = nifti_mod._gzip_index(nifti.token)
    assert sorted(p[0] for p in index.points) == [nifti.offset + t * frame for t in slabs[::-1]]
    # the first read inflates the whole file, every other one its own slab only
    end = nifti.offset + nifti.data_nbytes
    assert counting.inflated == end + (len(slabs) - 1) * 6 * frame
    # a grid of snapshots that are not where reads begin still bounds the re-inflation
    monkeypatch.setattr(nifti_mod, "CHECKPOINT_EVERY", 4096)
    other = nifti_mod.NiftiFile(path)
    counting.inflated = 0
    for t in slabs:
        np.testing.assert_array_equal(other[:, :, :, t : t + 6], ref[..., t : t + 6])
    assert len(nifti_mod._gzip_index(other.token).points) >= 60 * frame // 4096 - 2
    assert counting.inflated <= end + (len(slabs) - 1) * (6 * frame + 4096)


@pytest.mark.parametrize("engine", _engines())
def test_region_signals_of_a_gzip_run_inflate_it_once(make_nifti, monkeypatch, engine):
    """A spheres masker on a .nii.gz of many time slabs (the group pipeline's per-subject
    pass, on dask's synchronous scheduler): nilearn's signals, and the file inflated once,
    in order, by one decompressor (dask would otherwise take the slabs out of order)."""
    from nilearn.maskers import NiftiSpheresMasker as NilearnSpheres

    from lazyconn.maskers import NiftiSpheresMasker

    path, _ = make_nifti("run.nii.gz", shape=(9, 10, 11, 64))
    counting = _count_inflation_in_slabs(monkeypatch, engine, slab_volumes=4, frame=9 * 10 * 11)
    img = lazyconn.load(path)
    assert len(img.chunks[-1]) == 16
    seeds = [(4.0, 5.0, 6.0), (10.0, 8.0, 12.0), (2.0, 14.0, 4.0)]
    kw = dict(seeds=seeds, radius=4.0, detrend=True, standardize=None)
    with dask.config.set(scheduler="sync"):
        got = NiftiSpheresMasker(**kw).fit_transform(img)
    assert counting.made == 1 and nifti_mod.zlib.made == 0
    nifti = nifti_mod.NiftiFile(path)
    assert counting.inflated == nifti.offset + nifti.data_nbytes
    # nilearn on the voxels in float64 (lazyconn sums in float64; nilearn's float32 sums
    # of ~100-valued voxels differ by ~3e-5)
    src = nib.load(path)
    as64 = nib.Nifti1Image(np.asarray(src.dataobj, dtype=np.float64), src.affine, src.header)
    ref = NilearnSpheres(**kw).fit_transform(as64)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)  # float32 output


@pytest.mark.parametrize("engine", _engines())
def test_smoothed_masking_of_a_gzip_run_inflates_it_once(make_nifti, monkeypatch, engine):
    """apply_mask with smoothing on a .nii.gz of many time slabs (the decomposition's
    per-subject pass, on dask's synchronous scheduler): nilearn's values, and the file
    inflated once, in order, by one decompressor (dask's order took the slabs backwards,
    so the file was inflated ~1.7x, with zlib only)."""
    from nilearn.masking import apply_mask as nilearn_apply_mask

    from lazyconn.masking import apply_mask

    path, _ = make_nifti("run.nii.gz", shape=(9, 10, 11, 64))
    counting = _count_inflation_in_slabs(monkeypatch, engine, slab_volumes=4, frame=9 * 10 * 11)
    src = nib.load(path)
    mask = np.zeros(src.shape[:3], dtype=np.uint8)
    mask[2:8, 1:9, 3:10] = 1
    mask_img = nib.Nifti1Image(mask, src.affine)
    img = lazyconn.load(path)
    assert len(img.chunks[-1]) == 16
    with dask.config.set(scheduler="sync"):
        got = np.asarray(apply_mask(img, mask_img, smoothing_fwhm=6.0))
    assert counting.made == 1 and nifti_mod.zlib.made == 0
    nifti = nifti_mod.NiftiFile(path)
    assert counting.inflated == nifti.offset + nifti.data_nbytes
    ref = nilearn_apply_mask(src, mask_img, smoothing_fwhm=6.0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_gzip_threads_reading_one_file_take_turns(make_nifti, monkeypatch):
    """Slabs of one file on several dask threads: values equal nibabel's; reads take turns
    on the file (never two inflaters at once), each resuming where another stopped."""
    path, ref = make_nifti("run.nii.gz", shape=(7, 8, 9, 80))
    monkeypatch.setattr(nifti_mod, "READ_BLOCK", 512)
    from lazyconn.io import _dask

    monkeypatch.setattr(_dask, "DEFAULT_CHUNK_BYTES", 5 * 7 * 8 * 9 * 4)
    busy, overlaps = [], []
    real = nifti_mod._inflate_range

    def watched(*args):
        overlaps.append(len(busy))
        busy.append(1)
        try:
            time.sleep(0.001)
            return real(*args)
        finally:
            busy.pop()

    monkeypatch.setattr(nifti_mod, "_inflate_range", watched)
    img = lazyconn.load(path)
    assert len(img.chunks[-1]) == 16
    with dask.config.set(scheduler="threads", num_workers=4):
        np.testing.assert_array_equal(img.data.compute(), ref)
    assert len(overlaps) == 16 and max(overlaps) == 0


def test_open_reads_header_only(tmp_path, affine):
    """A 4.3 GB run opens in well under a second: the voxels are never touched."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((91, 109, 91, 1200))
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms((2, 2, 2, 0.72))
    path = tmp_path / "big.nii"
    with open(path, "wb") as f:
        img = nib.Nifti1Image(np.zeros((1, 1, 1, 1), np.float32), affine, hdr)
        header = img.header
        header.set_data_shape((91, 109, 91, 1200))
        header.write_to(f)
        f.truncate(352 + 91 * 109 * 91 * 1200 * 4)  # sparse: no data written
    with raise_if_dask_computes():
        start = time.perf_counter()
        img = lazyconn.load(str(path))
        assert time.perf_counter() - start < 1.0
    assert img.shape == (91, 109, 91, 1200)
    assert img.data.nbytes == 91 * 109 * 91 * 1200 * 4
    assert abs(img.t_r - 0.72) < 1e-6
    assert "size=4." in repr(img) and "GiB" in repr(img)


def test_gzip_open_reads_header_only(tmp_path, make_nifti):
    """A .nii.gz cut in half: load reads only the header and succeeds; reading fails."""
    path, ref = make_nifti("run.nii.gz", shape=(7, 8, 9, 200))
    data = Path(path).read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with raise_if_dask_computes():
        img = lazyconn.load(str(bad))
    assert img.shape == (7, 8, 9, 200)
    # The part before the cut is readable.
    np.testing.assert_array_equal(nifti_mod.NiftiFile(str(bad))[..., :10], ref[..., :10])
    with pytest.raises(lazyconn.exceptions.InputFileError, match=r"cut.nii.gz.*truncated"):
        img.data.compute()


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
def test_graph_pickles_and_computes(make_nifti, name):
    path, ref = make_nifti(name)
    img = lazyconn.load(path, chunks=UNEVEN)
    graph = (img.data * 2).sum(axis=-1)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        back = pickle.loads(dumps(graph))
        np.testing.assert_allclose(back.compute(scheduler="sync"), (ref * 2).sum(-1), rtol=1e-6)
    # The file handle pickles to its description, not an open file.
    handle = nifti_mod.NiftiFile(path)
    clone = pickle.loads(pickle.dumps(handle))
    np.testing.assert_array_equal(clone[1:3, :, :, 4:6], ref[1:3, :, :, 4:6])


@pytest.mark.cluster
def test_computes_on_distributed(make_nifti, tmp_path):
    distributed = pytest.importorskip("distributed")
    p_nii, ref = make_nifti("a.nii")
    p_gz, ref_gz = make_nifti("b.nii.gz")
    store = str(tmp_path / "b.zarr")
    lazyconn.load(p_gz).to_zarr(store, chunks=UNEVEN)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        results = client.compute(
            [lazyconn.load(p).data.mean(axis=-1) for p in (p_nii, p_gz, store)], sync=True
        )
    np.testing.assert_allclose(results[0], ref.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(results[1], ref_gz.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(results[2], ref_gz.mean(-1), rtol=1e-6)


def test_file_backed_nibabel_image_is_read_lazily(make_nifti):
    path, ref = make_nifti("run.nii.gz", dtype=np.int16, slope=0.25)
    nimg = nib.load(path)
    with raise_if_dask_computes():
        img = lazyconn.load(nimg, chunks=UNEVEN)
    assert not nimg.in_memory  # nibabel did not cache the voxels
    np.testing.assert_array_equal(img.data.compute(), ref)
    np.testing.assert_array_equal(img.affine, nimg.affine)


def test_deterministic_names(make_nifti):
    path, _ = make_nifti("run.nii")
    assert lazyconn.load(path).data.name == lazyconn.load(path).data.name
    assert lazyconn.load(path).data.name != lazyconn.load(path, chunks=UNEVEN).data.name


def test_3d_images(make_nifti):
    for name in ("vol.nii", "vol.nii.gz"):
        path, ref = make_nifti(name, shape=(7, 8, 9))
        img = lazyconn.load(path, chunks=(4, 5, 6))
        assert img.t_r is None
        with dask.config.set(scheduler="sync"):
            np.testing.assert_array_equal(img.data.compute(), ref)


def test_file_urls_and_pathlib(make_nifti, tmp_path):
    from pathlib import Path

    path, ref = make_nifti("run.nii.gz")
    for src in (f"file://{path}", Path(path)):
        img = lazyconn.load(src)
        np.testing.assert_array_equal(img.data.compute(), ref)
    store = f"file://{tmp_path}/run.zarr"
    lazyconn.convert(f"file://{path}", store, progress=False)
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)
    assert lazyconn.load(store).source == store


def test_read_keys_are_checked(make_nifti):
    path, ref = make_nifti("run.nii")
    nifti = nifti_mod.NiftiFile(path)
    np.testing.assert_array_equal(nifti[1:3, ..., :2], ref[1:3, ..., :2])
    with pytest.raises(IndexError, match=r"too many indices for a 4-D NiftiFile"):
        nifti[0:1, 0:1, 0:1, 0:1, 0:1]
    with pytest.raises(TypeError, match=r"NiftiFile indices must be slices, got 0"):
        nifti[0]
    with pytest.raises(TypeError, match=r"NiftiFile slices must have step 1"):
        nifti[::2]


_WITHOUT_ISAL = """
import sys, zlib
sys.modules["isal"] = None  # a platform where isal cannot be imported
import dask, numpy as np, nibabel as nib, lazyconn
from lazyconn.io import convert as convert_mod, nifti as nifti_mod, writers
src, dst, out = sys.argv[1:4]
assert nifti_mod.fast_zlib is zlib and convert_mod._inflate is zlib
ref = np.asanyarray(nib.load(src).dataobj)
img = lazyconn.load(src, chunks=(7, 8, 9, 6))
with dask.config.set(scheduler="sync"):  # slabs in order, then backwards (zlib snapshots)
    np.testing.assert_array_equal(img.data.compute(), ref)
    for t in range(54, -1, -6):
        np.testing.assert_array_equal(img.data[..., t : t + 6].compute(), ref[..., t : t + 6])
lazyconn.convert(src, dst, progress=False)
np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), ref)
writers.write_nifti(lazyconn.load(dst), out)
np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), ref)
print("zlib ok")
"""


def test_without_isal_zlib_reads_converts_and_writes_the_same(make_nifti, tmp_path):
    """isal is a dependency, but where it cannot be imported the reader, convert and the
    writer fall back to zlib with the same values (a fresh process: the choice is made at
    import)."""
    import subprocess
    import sys

    path, _ = make_nifti("run.nii.gz", shape=(7, 8, 9, 60))
    args = [str(path), str(tmp_path / "run.zarr"), str(tmp_path / "back.nii.gz")]
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_ISAL, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "zlib ok"
