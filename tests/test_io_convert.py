"""Streaming conversion: lossless, chunked for processing, parallel, interruption-safe."""

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

import lazyconn
from lazyconn.exceptions import IncompleteStoreError, OutputExistsError, ParameterError
from lazyconn.io import convert as convert_mod

UNEVEN = (4, 5, 6, 20)


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
@pytest.mark.parametrize(
    "dtype, slope, inter", [(np.float32, None, None), (np.int16, 0.5, 3.0), (">f4", None, None)]
)
@pytest.mark.parametrize("unit_bytes", [10**9, 3000])  # whole rows, and rows split along x
def test_convert_is_lossless(make_nifti, tmp_path, name, dtype, slope, inter, unit_bytes):
    path, ref = make_nifti(name, dtype=dtype, slope=slope, inter=inter)
    store = str(tmp_path / "run.zarr")
    assert (
        lazyconn.convert(path, store, chunks=UNEVEN, unit_bytes=unit_bytes, progress=False)
        == store
    )
    img = lazyconn.load(store)
    assert img.chunks == ((4, 3), (5, 3), (6, 3), (20,))
    assert img.dtype == ref.dtype
    np.testing.assert_array_equal(img.data.compute(), ref)
    np.testing.assert_array_equal(img.affine, nib.load(path).affine)
    out = str(tmp_path / "back.nii")
    img.to_nifti(out)
    original = Path(path).read_bytes()
    if name.endswith(".gz"):
        original = gzip.decompress(original)
    assert Path(out).read_bytes() == original


def test_unit_plan_covers_every_voxel_once():
    units = convert_mod._plan_units((7, 8, 9, 20), (4, 5, 6, 20), 4, 2 * 4 * 5 * 6 * 20 * 4 - 1)
    seen = np.zeros((7, 8, 9), int)
    for x0, x1, y0, y1, z0, z1 in units:
        seen[x0:x1, y0:y1, z0:z1] += 1
        assert x1 - x0 <= 4  # budget forces one x chunk per unit
    assert (seen == 1).all()
    whole = convert_mod._plan_units((7, 8, 9, 20), (4, 5, 6, 20), 4, 10**9)
    assert len(whole) == 4 and all((u[0], u[1]) == (0, 7) for u in whole)


def test_convert_many_files_in_one_graph(make_nifti, tmp_path, capsys):
    made = [make_nifti(f"s{i}.nii.gz", shape=(7, 8, 9, 10 + i)) for i in range(3)]
    dsts = [str(tmp_path / f"s{i}.zarr") for i in range(3)]
    delayed = lazyconn.convert([p for p, _ in made], dsts, chunks=(4, 5, 6), compute=False)
    assert len(delayed) == 3
    out = lazyconn.convert([p for p, _ in made], dsts, chunks=(4, 5, 6), overwrite=True)
    assert out == dsts
    captured = capsys.readouterr()  # progress on stderr, plain lines off a terminal
    assert "convert: tasks 100% 18/18" in captured.err and "\r" not in captured.err
    for (_, ref), dst in zip(made, dsts, strict=True):
        np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), ref)


def test_compute_false_deletes_and_creates_nothing_until_computed(make_nifti, tmp_path):
    import dask

    old_path, old_ref = make_nifti("old.nii.gz", shape=(7, 8, 9, 5))
    new_path, new_ref = make_nifti("new.nii.gz")
    store = str(tmp_path / "run.zarr")
    lazyconn.convert(old_path, store, progress=False)
    before = sorted(p.relative_to(tmp_path) for p in Path(store).rglob("*"))

    task = lazyconn.convert(new_path, store, overwrite=True, compute=False)
    fresh = str(tmp_path / "fresh.zarr")
    fresh_task = lazyconn.convert(new_path, fresh, compute=False)
    # the graph is built: the old store is untouched and complete, nothing new exists
    assert sorted(p.relative_to(tmp_path) for p in Path(store).rglob("*")) == before
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), old_ref)
    assert not os.path.exists(fresh)
    # what would be refused is refused when the graph is built, before anything runs
    with pytest.raises(OutputExistsError, match=r"already exists; expected a new path"):
        lazyconn.convert(new_path, store, compute=False)

    dask.compute(task, fresh_task)
    for dst in (store, fresh):
        np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), new_ref)


def test_convert_float_dtype_and_refusal_for_scaled_integers(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii.gz", dtype=np.int16, slope=0.5, inter=3.0)
    store = str(tmp_path / "f.zarr")
    lazyconn.convert(path, store, dtype="float32", progress=False)
    img = lazyconn.load(store)
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img.data.compute(), ref.astype(np.float32))
    assert zarr.open_group(store, mode="r").attrs["lazyconn"]["scl_slope"] == 1.0
    with pytest.raises(
        ParameterError,
        match=r"dtype='int16' cannot hold the values of src=.*run.nii.gz.*scl_slope=0.5.*"
        r"expected dtype=None",
    ):
        lazyconn.convert(path, str(tmp_path / "i.zarr"), dtype="int16")
    assert not os.path.exists(tmp_path / "i.zarr")


@pytest.mark.parametrize("name", ["run.nii", "run.nii.gz"])
def test_interrupted_conversion_is_detected_and_redone(make_nifti, tmp_path, monkeypatch, name):
    path, ref = make_nifti(name)
    store = str(tmp_path / "run.zarr")
    real = convert_mod._write_unit
    calls = []

    def crash_after_one(staged, job, unit):
        calls.append(unit)
        if len(calls) > 1:
            raise RuntimeError("simulated crash mid-write")
        return real(staged, job, unit)

    monkeypatch.setattr(convert_mod, "_write_unit", crash_after_one)
    with pytest.raises(RuntimeError, match="simulated crash"):
        lazyconn.convert(path, store, chunks=UNEVEN, progress=False, scratch_dir=tmp_path / "s")
    scratch = tmp_path / "s"  # the staged copy is removed (a local .nii is read in place)
    assert not scratch.exists() or os.listdir(scratch) == []
    with pytest.raises(IncompleteStoreError, match=r"run.zarr.*incomplete.*interrupted"):
        lazyconn.load(store)
    monkeypatch.setattr(convert_mod, "_write_unit", real)
    lazyconn.convert(path, store, chunks=UNEVEN, progress=False)  # no overwrite needed
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)


def test_scratch_file_is_removed(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii.gz")
    scratch = tmp_path / "scratch"
    lazyconn.convert(path, str(tmp_path / "r.zarr"), scratch_dir=scratch, progress=False)
    assert os.listdir(scratch) == []


@pytest.mark.cluster
def test_convert_on_distributed_client(make_nifti, tmp_path):
    distributed = pytest.importorskip("distributed")
    made = [make_nifti(f"s{i}.nii.gz") for i in range(2)]
    dsts = [str(tmp_path / f"s{i}.zarr") for i in range(2)]
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        lazyconn.convert([p for p, _ in made], dsts, chunks=UNEVEN)  # distributed's progress
    for (_, ref), dst in zip(made, dsts, strict=True):
        np.testing.assert_array_equal(lazyconn.load(dst).data.compute(), ref)


@pytest.mark.slow  # a subprocess that imports lazyconn: a few seconds
def test_killed_conversion_is_never_read_as_complete(make_nifti, tmp_path):
    """SIGKILL mid-write (a real crash, no cleanup code runs): load refuses, convert redoes."""
    import signal
    import subprocess
    import sys

    path, ref = make_nifti("run.nii.gz")
    store = str(tmp_path / "run.zarr")
    code = f"""
import sys, time
from lazyconn.io import convert as cm
real = cm._write_unit
def slow(staged, job, unit):
    out = real(staged, job, unit)
    sys.stdout.write("wrote a unit\\n")  # one write: units run in threads, print's two raced
    sys.stdout.flush()
    time.sleep(60)
    return out
cm._write_unit = slow
cm.convert({path!r}, {store!r}, chunks=(4, 5, 6), progress=False, scratch_dir={str(tmp_path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "wrote a unit"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with pytest.raises(IncompleteStoreError, match=r"run\.zarr"):
        lazyconn.load(store)
    lazyconn.convert(path, store, chunks=(4, 5, 6), progress=False)
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)


def test_convert_mostly_zero_run(tmp_path, affine):
    """Masked-like data (zeros outside a box), unaligned to chunks, round-trips."""
    data = np.zeros((30, 31, 32, 6), np.float32)
    data[5:20, 3:25, 10:30] = np.random.default_rng(1).standard_normal((15, 22, 20, 6))
    path = str(tmp_path / "masked.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), path)
    lazyconn.convert(path, str(tmp_path / "m.zarr"), chunks=(16, 16, 16), progress=False)
    np.testing.assert_array_equal(lazyconn.load(str(tmp_path / "m.zarr")).data.compute(), data)


def test_staged_pieces_are_compressed_and_span_every_volume(tmp_path, affine, monkeypatch):
    """A masked-like .nii.gz is staged as compressed per-chunk pieces (a scratch file much
    smaller than the voxels) covering every volume once; pieces of a few volumes each."""
    monkeypatch.setattr(convert_mod, "_STAGE_VOLUMES", 4)
    data = np.zeros((30, 31, 32, 10), np.float32)
    data[5:20, 3:25, 10:30] = 100 + np.random.default_rng(1).standard_normal((15, 22, 20, 10))
    path = str(tmp_path / "masked.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), path)
    seen = {}
    real = convert_mod._finish

    def spy(units, staged, job):
        seen["index"] = staged.index
        return real(units, staged, job)

    monkeypatch.setattr(convert_mod, "_finish", spy)
    store = str(tmp_path / "m.zarr")
    lazyconn.convert(path, store, chunks=(16, 16, 16), progress=False)
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), data)
    written = max(offset + n for pieces in seen["index"].values() for *_, offset, n in pieces)
    assert written < data.nbytes / 3  # compressed: little reaches the page cache
    assert len(seen["index"]) == 2 * 2 * 2  # one entry per stored chunk
    for pieces in seen["index"].values():
        assert [(t0, t1) for t0, t1, _, _ in pieces] == [(0, 4), (4, 8), (8, 10)]
