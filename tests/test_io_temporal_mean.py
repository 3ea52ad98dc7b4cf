"""The temporal mean stored at conversion: equal to the run's mean, read instead of the run.

``convert`` stores each voxel's mean over time (``mean/`` in the store, listed in the
completion record, checksummed); ``mean_img`` and the EPI masks of an unchanged run read it.
"""

import nibabel as nib
import numpy as np
import pytest
import zarr
from nilearn import image as nimage
from nilearn import masking as nmasking

import lazyconn
from lazyconn import image as limage
from lazyconn import masking as lmasking
from lazyconn.exceptions import ChecksumError, IncompleteStoreError, MissingChunkError
from lazyconn.io import _dask
from lazyconn.io.store import mark_complete
from lazyconn.maskers import MultiNiftiMasker
from lazyconn.testing.imaging import synthetic_epi
from lazyconn.testing.storage import with_flipped_bit

CHUNKS = (4, 3, 5)


def _files(store, array):
    return sorted(p for p in store.rglob("*") if p.is_file() and f"/{array}/c/" in p.as_posix())


def _dask_mean(img):
    """lazyconn's mean of the run's data, as computed from the voxels."""
    data = img.data
    return data.mean(axis=-1, dtype=np.float64).astype(np.mean(np.zeros(1, data.dtype)).dtype)


@pytest.fixture
def voxel_reads(monkeypatch):
    """Counts the reads of store voxel chunks (``_CheckedZarr``) by array path."""
    counts = {}
    original = _dask._CheckedZarr.__getitem__

    def counting(self, key):
        name = self.array.path
        counts[name] = counts.get(name, 0) + 1
        return original(self, key)

    monkeypatch.setattr(_dask._CheckedZarr, "__getitem__", counting)
    return counts


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
@pytest.mark.parametrize(
    "dtype, slope, inter",
    [(np.float32, None, None), (np.float64, None, None), (np.int16, 0.5, 3.0), (">i2", 2.0, -1.0)],
)
def test_stored_mean_equals_the_runs_mean(make_nifti, tmp_path, name, dtype, slope, inter):
    _check_stored_mean(make_nifti, tmp_path, name, dtype, slope, inter, CHUNKS, (7, 8, 9, 20))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks", [(1, 1, 1), None])
def test_stored_mean_of_other_chunk_layouts(make_nifti, tmp_path, dtype, chunks):
    # One voxel per chunk (time is then the contiguous axis), and one chunk for the run.
    _check_stored_mean(make_nifti, tmp_path, "run.nii", dtype, None, None, chunks, (3, 2, 2, 30))


def _check_stored_mean(make_nifti, tmp_path, name, dtype, slope, inter, chunks, shape):
    path, ref = make_nifti(name, shape=shape, dtype=dtype, slope=slope, inter=inter)
    store = tmp_path / "run.zarr"
    lazyconn.convert(path, store, chunks=chunks, progress=False)
    img = lazyconn.load(store)
    stored = img._raw[3]
    assert stored is not None
    mean = np.asarray(limage.mean_img(img).data.compute())
    # Bit for bit lazyconn's mean of the voxels (so masks are unchanged)...
    expected = np.asarray(_dask_mean(img).compute())
    assert mean.dtype == expected.dtype == np.mean(ref[..., :1]).dtype
    np.testing.assert_array_equal(mean, expected)
    # ... and numpy's / nilearn's mean of nibabel's values.
    np.testing.assert_allclose(mean, ref.mean(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(
        mean, nimage.mean_img(nib.load(path), copy_header=True).get_fdata(), rtol=1e-6
    )
    meta = zarr.open_group(store, mode="r").attrs["lazyconn"]
    assert meta["temporal_mean"] == "mean"


def test_scaled_to_float_store_keeps_the_mean(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii.gz", dtype=np.int16, slope=0.5, inter=3.0)
    store = tmp_path / "run.zarr"
    lazyconn.convert(path, store, chunks=CHUNKS, dtype=np.float32, progress=False)
    img = lazyconn.load(store)
    mean = np.asarray(limage.mean_img(img).data.compute())
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(mean, np.asarray(_dask_mean(img).compute()))
    np.testing.assert_allclose(mean, ref.mean(axis=-1), rtol=1e-6)


def test_epi_masks_read_the_stored_mean_not_the_run(tmp_path, rng, voxel_reads):
    runs = [synthetic_epi((13, 11, 12, 15), rng) for _ in range(3)]
    stores = []
    for i, run in enumerate(runs):
        run.to_filename(tmp_path / f"run{i}.nii.gz")
        stores.append(str(tmp_path / f"run{i}.zarr"))
        lazyconn.convert(
            str(tmp_path / f"run{i}.nii.gz"), stores[-1], chunks=CHUNKS, progress=False
        )
    expected = nmasking.compute_multi_epi_mask(runs)
    one = nmasking.compute_epi_mask(runs[0])
    voxel_reads.clear()
    multi = lmasking.compute_multi_epi_mask(stores)
    single = lmasking.compute_epi_mask(stores[0])
    masker = MultiNiftiMasker(mask_strategy="epi").fit(stores)
    assert voxel_reads.get("0", 0) == 0  # no voxel chunk was read
    assert voxel_reads["mean"] > 0
    np.testing.assert_array_equal(multi.get_fdata(), expected.get_fdata())
    np.testing.assert_array_equal(masker.mask_img_.get_fdata(), expected.get_fdata())
    np.testing.assert_array_equal(single.get_fdata(), one.get_fdata())
    # Without the stored means (rechunked on opening) the runs are read, with the same mask.
    rechunked = [lazyconn.load(s, chunks=(6, 6, 6, 15)) for s in stores]
    assert all(r._raw[3] is None for r in rechunked)
    again = lmasking.compute_multi_epi_mask(rechunked)
    assert voxel_reads["0"] > 0
    np.testing.assert_array_equal(again.get_fdata(), expected.get_fdata())


def test_transformed_runs_do_not_use_the_stored_mean(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii.gz")
    store = tmp_path / "run.zarr"
    lazyconn.convert(path, store, chunks=CHUNKS, progress=False)
    img = lazyconn.load(store)
    part = limage.index_img(img, slice(0, 7))
    np.testing.assert_allclose(
        limage.mean_img(part).get_fdata(), ref[..., :7].mean(axis=-1), rtol=1e-6
    )
    smoothed = limage.smooth_img(img, 6.0)
    np.testing.assert_allclose(
        limage.mean_img(smoothed).get_fdata(),
        nimage.mean_img(nimage.smooth_img(nib.load(path), 6.0), copy_header=True).get_fdata(),
        rtol=1e-5,
    )
    # A cropped run: the stored mean is for the whole grid.
    crop = img.slicer[1:5]
    assert crop._raw is None
    np.testing.assert_allclose(limage.mean_img(crop).get_fdata(), ref[1:5].mean(-1), rtol=1e-6)


def test_older_store_without_a_mean_computes_it(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii.gz")
    store = tmp_path / "run.zarr"
    lazyconn.convert(path, store, chunks=CHUNKS, progress=False)
    group = zarr.open_group(store, mode="r+")
    meta = dict(group.attrs["lazyconn"])
    del meta["temporal_mean"]  # as stores converted before the mean was stored
    group.attrs["lazyconn"] = meta
    for f in _files(store, "mean"):
        f.unlink()
    img = lazyconn.load(store)
    assert img._raw[3] is None
    mean = limage.mean_img(img).get_fdata()
    np.testing.assert_allclose(mean, ref.mean(axis=-1), rtol=1e-6)


def test_missing_or_corrupt_mean_chunk_is_an_error(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii.gz")
    store = tmp_path / "run.zarr"
    lazyconn.convert(path, store, chunks=CHUNKS, progress=False)
    files = _files(store, "mean")
    assert len(files) == 2 * 3 * 2  # the voxels' spatial chunk grid
    good = files[0].read_bytes()
    files[0].write_bytes(with_flipped_bit(good))
    with pytest.raises(
        ChecksumError, match=r"store '.*run.zarr': chunk \(0, 0, 0\) \(z, y, x chunk .* crc32c"
    ):
        limage.mean_img(lazyconn.load(store)).get_fdata()
    files[0].write_bytes(good)
    files[1].unlink()
    key = files[1].relative_to(store).as_posix()
    with pytest.raises(
        MissingChunkError, match=rf"store '.*run.zarr' .* chunk '{key}' is missing"
    ):
        lmasking.compute_epi_mask(str(store))
    # A store whose mean lacks chunks is never marked complete.
    with pytest.raises(IncompleteStoreError, match=r"chunk files of 'mean' after writing"):
        mark_complete(str(store))
