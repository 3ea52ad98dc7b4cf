"""``LazyImage.to_zarr`` of a computed result: batches of block-rows within a memory budget."""

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from nilearn import image as nimage

import lazyconn
from lazyconn import image
from lazyconn.exceptions import IncompleteStoreError, ParameterError
from lazyconn.io import writers

SHAPE = (7, 8, 9, 20)
STORED = (3, 3, 4)  # stored blocks: x (3, 3, 1), y (3, 3, 2), z (4, 4, 1)
ROW_BYTES = 3 * 3 * 9 * 20 * 4  # one block-row: x-block 3, y-block 3, all z, all t, float32


@pytest.fixture
def run(rng, affine):
    data = rng.standard_normal(SHAPE).astype(np.float32)
    nimg = nib.Nifti1Image(data, affine)
    nimg.header.set_zooms((3, 3, 3, 2.0))
    return nimg


def _smoothed(run):
    # Uneven input chunks (two uneven per spatial axis), unlike the stored chunks.
    return image.smooth_img(lazyconn.load(run, chunks=(4, 5, 5, 20)), 6)


def _write(img, path, **kw):
    img.to_zarr(str(path), chunks=STORED, **kw)
    return lazyconn.load(str(path)).data.compute()


def test_batched_equals_one_graph_equals_nilearn(run, tmp_path):
    ref = nimage.smooth_img(run, 6).get_fdata(dtype=np.float32)
    one = _write(_smoothed(run), tmp_path / "one.zarr", batch_bytes=2**40)
    rows = _write(_smoothed(run), tmp_path / "rows.zarr", batch_bytes=ROW_BYTES)
    two = _write(_smoothed(run), tmp_path / "two.zarr", batch_bytes=2 * ROW_BYTES)
    cols = _write(_smoothed(run), tmp_path / "cols.zarr", batch_bytes=6 * ROW_BYTES)
    default = _write(_smoothed(run), tmp_path / "default.zarr")  # fits: one graph
    for out in (rows, two, cols, default):
        np.testing.assert_array_equal(out, one)
    np.testing.assert_allclose(one, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "budget, expected",
    [
        (ROW_BYTES, 9),  # one row per batch: 3 x-blocks x 3 y-blocks
        (2 * ROW_BYTES - 1, 9),
        (2 * ROW_BYTES, 6),  # y-blocks (0, 1), (2,) of each x-block
        (3 * ROW_BYTES, 3),  # a whole x-block
        (6 * ROW_BYTES, 2),  # two whole x-blocks, then the last
        (9 * ROW_BYTES, 1),  # everything: one graph
        (1, 9),  # below one row: still one row per batch
    ],
)
def test_batch_count_follows_budget_and_tiles_the_array(budget, expected):
    stored = da.zeros((20, 9, 8, 7), chunks=(20, 4, 3, 3), dtype=np.float32)
    regions = writers.batch_regions(stored.chunks, 4, budget)
    assert len(regions) == expected
    covered = np.zeros(stored.shape[1:], dtype=int)
    for region in regions:
        assert region[0] == slice(None) and region[1] == slice(None)
        covered[region[1:]] += 1
    assert (covered == 1).all()  # each voxel written exactly once


def test_to_zarr_writes_one_store_call_per_batch(run, tmp_path, monkeypatch):
    calls = []
    real = da.store
    monkeypatch.setattr(writers.da, "store", lambda *a, **k: calls.append(k) or real(*a, **k))
    _write(_smoothed(run), tmp_path / "out.zarr", batch_bytes=2 * ROW_BYTES)
    assert len(calls) == 6
    assert all(k["regions"] is not None for k in calls)


def test_failure_in_a_middle_batch_leaves_an_incomplete_store(run, tmp_path, monkeypatch):
    calls = []
    real = da.store

    def failing_store(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(writers.da, "store", failing_store)
    store = str(tmp_path / "out.zarr")
    with pytest.raises(RuntimeError, match="disk full"):
        _smoothed(run).to_zarr(store, chunks=STORED, batch_bytes=ROW_BYTES)
    assert len(calls) == 3
    with pytest.raises(IncompleteStoreError, match="incomplete lazyconn store"):
        lazyconn.load(store)


def test_progress_is_shown_across_batches(run, tmp_path, capsys):
    _write(_smoothed(run), tmp_path / "out.zarr", batch_bytes=3 * ROW_BYTES, progress=True)
    err = capsys.readouterr().err
    assert "write: batches   0% 0/3" in err and "write: batches 100% 3/3" in err
    assert "\r" not in err  # not a terminal: plain lines


@pytest.mark.parametrize("bad", [0, -5, float("nan"), "1GB"])
def test_bad_batch_bytes(run, tmp_path, bad):
    with pytest.raises(ParameterError, match=r"batch_bytes=.* is not valid; expected a finite"):
        _smoothed(run).to_zarr(str(tmp_path / "out.zarr"), batch_bytes=bad)
