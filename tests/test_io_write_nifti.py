"""Writing NIfTI files slab by slab: nibabel's bytes, bounded memory, no half-written file."""

import gzip
import os
import sys
import tracemalloc
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import pytest

import lazyconn
from lazyconn.exceptions import OutputNotWritableError, ParameterError
from lazyconn.io.writers import write_nifti
from lazyconn.testing.storage import write_nifti as save_with_nibabel

SHAPE = (9, 8, 7, 30)
CHUNKS = (4, 5, 3)
#: Slabs of 7 volumes (a quarter of the budget each): 5 slabs, the last one partial.
TINY = 4 * 7 * 9 * 8 * 7 * 4


def _content(path) -> bytes:
    raw = Path(path).read_bytes()
    return gzip.decompress(raw) if str(path).endswith(".gz") else raw


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same run as a .nii.gz file, a store and an in-memory (derived) image, and the
    file nibabel writes for each (the reference); made once for the module."""
    tmp_path = tmp_path_factory.mktemp("sources")
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -9.0]
    data = (100 + 10 * np.random.default_rng(0).standard_normal(SHAPE)).astype(np.float32)
    path = tmp_path / "run.nii.gz"
    save_with_nibabel(path, data, affine)
    store = tmp_path / "run.zarr"
    lazyconn.convert(str(path), store, chunks=CHUNKS, progress=False)
    derived = lazyconn.load(store).with_data(lazyconn.load(store).data * 2)
    nib.load(path).to_filename(tmp_path / "nib_run.nii")
    nib.Nifti1Image(data * 2, affine, derived.header).to_filename(tmp_path / "nib_derived.nii")
    return {
        "nii.gz": (lazyconn.load(path), tmp_path / "nib_run.nii"),
        "store": (lazyconn.load(store), tmp_path / "nib_run.nii"),
        "derived": (derived, tmp_path / "nib_derived.nii"),
    }


@pytest.mark.parametrize("kind", ["nii.gz", "store", "derived"])
@pytest.mark.parametrize("strategy", [None, "slabs", "staged"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_streamed_file_is_nibabels(sources, tmp_path, kind, strategy, ext):
    img, reference = sources[kind]
    out = tmp_path / f"out{ext}"
    write_nifti(img, out, budget_bytes=TINY, strategy=strategy, scratch_dir=tmp_path / "s")
    assert _content(out) == _content(reference)  # header and voxels, bit for bit
    scratch = tmp_path / "s"
    assert not scratch.exists() or os.listdir(scratch) == []  # the staged pieces are gone


def test_gzip_bytes_are_nibabels_with_zlib(sources, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "isal", None)  # as without the optional isal
    img, _ = sources["derived"]
    write_nifti(img, tmp_path / "out.nii.gz", budget_bytes=TINY)
    nib.Nifti1Image(np.asarray(img.data), img.affine, img.header).to_filename(
        tmp_path / "nib.nii.gz"
    )
    assert (tmp_path / "out.nii.gz").read_bytes() == (tmp_path / "nib.nii.gz").read_bytes()


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float64, bool])
def test_3d_and_other_dtypes(tmp_path, rng, affine, dtype):
    data = (rng.standard_normal((9, 8, 7)) * 30 + 50).astype(dtype)
    img = lazyconn.LazyImage(da.from_array(data, chunks=(4, 3, 2)), affine)
    write_nifti(img, tmp_path / "out.nii", budget_bytes=4 * 9 * 8 * 8)
    nib.Nifti1Image(data.astype(np.uint8) if dtype is bool else data, affine).to_filename(
        tmp_path / "nib.nii"
    )
    assert _content(tmp_path / "out.nii") == _content(tmp_path / "nib.nii")


@pytest.mark.parametrize(
    "chunks", [(16, 16, 16, 128), (32, 32, 32, 4)], ids=["whole-time", "time-slabs"]
)
def test_memory_is_bounded_by_the_budget(tmp_path, affine, chunks):
    # 16 MiB of voxels written with a 2 MiB budget, from whole-time chunks (as in a store:
    # staged) and from time slabs (as a .nii.gz: slab by slab). The source array exists
    # before the count starts (as a store's bytes on disk).
    shape = (32, 32, 32, 128)
    values = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    img = lazyconn.LazyImage(da.from_array(values, chunks=chunks), affine)
    budget = 2 * 2**20
    # Warm up once: the first compute imports modules, which is not the writer's memory.
    write_nifti(img.slicer[:2, :2, :2], tmp_path / "warm.nii.gz", budget_bytes=budget)
    tracemalloc.start()
    try:
        write_nifti(img, tmp_path / "out.nii.gz", budget_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * budget == values.nbytes / 4  # never the image, nor a large part of it
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj), values)


def test_to_nifti_with_a_filename_returns_the_file_unread(sources, tmp_path):
    img, reference = sources["store"]
    back = img.to_nifti(tmp_path / "out.nii.gz")
    assert nib.is_proxy(back.dataobj)
    np.testing.assert_array_equal(back.get_fdata(), nib.load(reference).get_fdata())


def test_a_failed_write_leaves_no_file(tmp_path, affine):
    def fail(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("disk vanished")
        return block

    data = da.ones((8, 4, 4, 6), chunks=(4, 4, 4, 6), dtype=np.float32).map_blocks(
        fail, dtype=np.float32
    )
    img = lazyconn.LazyImage(data, affine)
    (tmp_path / "old.nii").write_bytes(b"previous result")
    for name, strategy in [("new.nii.gz", "staged"), ("old.nii", "slabs")]:
        with pytest.raises(RuntimeError, match="disk vanished"):
            write_nifti(img, tmp_path / name, budget_bytes=4 * 8 * 16, strategy=strategy)
    # The new file never appeared, the old one is untouched, no temporary file is left.
    assert sorted(os.listdir(tmp_path)) == ["old.nii"]
    assert (tmp_path / "old.nii").read_bytes() == b"previous result"


def test_bad_arguments(sources, tmp_path):
    img, _ = sources["derived"]
    with pytest.raises(ParameterError, match=r"strategy='rows' is not valid; expected None"):
        write_nifti(img, tmp_path / "x.nii", strategy="rows")
    with pytest.raises(ParameterError, match=r"budget_bytes=0"):
        write_nifti(img, tmp_path / "x.nii", budget_bytes=0)
    with pytest.raises(OutputNotWritableError, match=r"filename='.*/nowhere/x.nii' cannot be"):
        write_nifti(img, tmp_path / "nowhere" / "x.nii")


def test_permission_denied(sources, tmp_path):
    img, _ = sources["derived"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # pragma: no cover - running as root
            pytest.skip("permissions are not enforced for this user")
        with pytest.raises(OutputNotWritableError, match=r"filename='.*locked/x.nii' cannot"):
            write_nifti(img, locked / "x.nii")
    finally:
        locked.chmod(0o700)


@pytest.mark.s3
def test_write_to_s3(sources, s3_bucket):
    bucket, options = s3_bucket
    img, reference = sources["store"]
    url = f"{bucket}/out/run.nii.gz"
    back = img.to_nifti(url, storage_options=options)
    np.testing.assert_array_equal(back.get_fdata(), nib.load(reference).get_fdata())
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    assert fs.ls(f"{bucket[5:]}/out") == [f"{bucket[5:]}/out/run.nii.gz"]  # no temporary left
    with fs.open(url, "rb") as f:
        assert gzip.decompress(f.read()) == _content(reference)
