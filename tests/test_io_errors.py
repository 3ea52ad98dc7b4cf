"""Bad input: each error names the thing, shows the value and says what was expected."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

import lazyconn
from lazyconn.exceptions import (
    DimensionError,
    IncompleteStoreError,
    InputFileError,
    InputNotFoundError,
    OutputExistsError,
    OutputNotWritableError,
    ParameterError,
)


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.nii.gz")
    with pytest.raises(InputNotFoundError, match=r"src='.*nope.nii.gz' does not exist; expected"):
        lazyconn.load(missing)
    with pytest.raises(FileNotFoundError, match=r"nope\.nii\.gz"):  # a builtin users already catch
        lazyconn.convert(missing, str(tmp_path / "x.zarr"))


@pytest.mark.parametrize(
    "content, match",
    [
        (b"hello, I am a text file\n" * 30, r"is not a NIfTI file \(sizeof_hdr"),
        (b"tiny", r"is not a NIfTI file: it has 4 bytes, fewer than a NIfTI header \(348\)"),
    ],
)
@pytest.mark.parametrize("name", ["text.nii", "text.nii.gz"])
def test_not_a_nifti(tmp_path, content, match, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with pytest.raises(InputFileError, match=f"src='.*{name}' " + match):
        lazyconn.load(str(path))


def test_analyze_pair_is_refused(tmp_path, affine):
    path = tmp_path / "pair.hdr"
    nib.save(nib.Nifti1Pair(np.zeros((3, 4, 5), np.float32), affine), str(path))
    with pytest.raises(
        InputFileError, match=r"pair.hdr' has magic b'ni1'; expected a single-file"
    ):
        lazyconn.load(str(path))


def test_truncated_nii_gz(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii.gz", shape=(7, 8, 9, 100))
    data = Path(path).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    img = lazyconn.load(str(cut))  # only the header is read when opening
    with pytest.raises(
        InputFileError, match=r"src='.*cut.nii.gz' is truncated or corrupt.*expected"
    ):
        img.data.compute()
    store = str(tmp_path / "cut.zarr")
    with pytest.raises(
        InputFileError, match=r"src='.*cut.nii.gz' is truncated: it holds \d+ voxel "
    ):
        lazyconn.convert(str(cut), store, progress=False)
    with pytest.raises(IncompleteStoreError, match=r"cut\.zarr"):  # never read as complete
        lazyconn.load(store)
    # Cut inside the header.
    head = tmp_path / "head.nii.gz"
    head.write_bytes(data[:40])
    with pytest.raises(InputFileError, match=r"head.nii.gz' is truncated or corrupt"):
        lazyconn.load(str(head))


def test_truncated_nii(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii")
    cut = tmp_path / "cut.nii"
    cut.write_bytes(Path(path).read_bytes()[:-100])
    with pytest.raises(InputFileError, match=r"cut.nii' is truncated: \d+ bytes; expected \d+"):
        lazyconn.load(str(cut))


@pytest.mark.parametrize("shape", [(7, 8), (7, 8, 9, 4, 2)])
@pytest.mark.parametrize("name", ["img.nii", "img.nii.gz"])
def test_wrong_dimensions(tmp_path, affine, shape, name):
    path = str(tmp_path / name)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), affine), path)
    text = ", ".join(map(str, shape))
    match = rf"src='.*{name}' has shape \({text}\) \({len(shape)}-D\); expected a 3-D or 4-D image"
    with pytest.raises(DimensionError, match=match):
        lazyconn.load(path)
    with pytest.raises(DimensionError, match=match):
        lazyconn.convert(path, str(tmp_path / "x.zarr"))
    with pytest.raises(DimensionError, match=r"shape \(" + text):
        lazyconn.load(nib.Nifti1Image(np.zeros(shape, np.float32), affine))


def test_integer_dtype_with_scaling_is_refused(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii", dtype=np.int16, slope=2.0, inter=1.0)
    with pytest.raises(
        ParameterError,
        match=r"dtype='int16' cannot hold the values of src='.*run.nii': it stores int16 with "
        r"scl_slope=2.0, scl_inter=1.0; expected dtype=None \(store the integers and their "
        r"scaling, lossless\) or a float dtype",
    ):
        lazyconn.convert(path, str(tmp_path / "x.zarr"), dtype=np.int16)


def test_destination_exists(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii")
    store = str(tmp_path / "run.zarr")
    lazyconn.convert(path, store, progress=False)
    match = r"dst='.*run.zarr' already exists; expected a new path, or pass overwrite=True"
    with pytest.raises(OutputExistsError, match=match):
        lazyconn.convert(path, store)
    with pytest.raises(OutputExistsError, match=match):
        lazyconn.load(path).to_zarr(store)
    lazyconn.convert(path, store, overwrite=True, progress=False)
    np.testing.assert_array_equal(lazyconn.load(store).data.compute(), ref)
    # overwrite=True never deletes a directory that is not a zarr store.
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("...")
    with pytest.raises(OutputExistsError, match="precious' is a non-empty directory that is not"):
        lazyconn.convert(path, str(other), overwrite=True)
    assert (other / "thesis.tex").exists()


def test_destination_not_writable(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(
        OutputNotWritableError,
        match=r"dst='.*afile/run.zarr' cannot be written: its directory '.*afile' is a file, not a "
        r"directory; expected a destination in a writable directory",
    ):
        lazyconn.convert(path, str(blocker / "run.zarr"))
    with pytest.raises(OutputNotWritableError, match=r"directory '.*no/such' does not exist"):
        lazyconn.load(path).to_zarr(str(tmp_path / "no" / "such" / "run.zarr"))
    with pytest.raises(PermissionError):  # the builtin class users catch
        lazyconn.convert(path, str(blocker / "run.zarr"))


def test_unknown_url_scheme(tmp_path):
    with pytest.raises(
        ParameterError,
        match=r"src='foo://bucket/run.nii.gz' has unknown URL scheme "
        r"'foo'; expected a local path or an fsspec URL",
    ):
        lazyconn.load("foo://bucket/run.nii.gz")
    with pytest.raises(ParameterError, match=r"dst='nope://x.zarr' has unknown URL scheme 'nope'"):
        lazyconn.convert(str(tmp_path / "a.nii"), "nope://x.zarr")


def test_store_without_completion_marker(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii")
    store = str(tmp_path / "run.zarr")
    lazyconn.convert(path, store, progress=False)
    group = zarr.open_group(store, mode="r+")
    meta = dict(group.attrs["lazyconn"])
    meta["complete"] = False
    group.attrs["lazyconn"] = meta
    with pytest.raises(
        IncompleteStoreError,
        match=r"src='.*run.zarr' is an incomplete lazyconn store \(its completion marker "
        r"'lazyconn.complete' is not set: an interrupted conversion\?\); expected a complete store",
    ):
        lazyconn.load(store)


def test_zarr_group_that_is_not_an_image(tmp_path):
    store = str(tmp_path / "other.zarr")
    zarr.create_group(store, attributes={"hello": 1})
    with pytest.raises(
        InputFileError,
        match=r"other.zarr' is a zarr group without lazyconn or "
        "NIfTI-Zarr metadata; expected a lazyconn zarr store",
    ):
        lazyconn.load(store)


def test_bad_chunks_and_parameters(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii")
    with pytest.raises(
        ParameterError,
        match=r"chunks=\(4, 4, 4, 5\) is not valid for shape "
        r"\(7, 8, 9, 20\).*a stored chunk never splits time",
    ):
        lazyconn.convert(path, str(tmp_path / "a.zarr"), chunks=(4, 4, 4, 5))
    with pytest.raises(ParameterError, match=r"dst has 2 entries but src has 1"):
        lazyconn.convert([path], [str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")])
    with pytest.raises(ParameterError, match=r"unit_bytes=0 is not valid"):
        lazyconn.convert(path, str(tmp_path / "a.zarr"), unit_bytes=0)


def test_scratch_disk_full(make_nifti, tmp_path, monkeypatch):
    import errno
    import os

    path, _ = make_nifti("run.nii.gz")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(
        OutputNotWritableError,
        match=r"scratch_dir='.*scratch' has no room for \d+ bytes of staged voxels; expected",
    ):
        lazyconn.convert(
            path, str(tmp_path / "r.zarr"), scratch_dir=tmp_path / "scratch", progress=False
        )
    with pytest.raises(IncompleteStoreError):
        lazyconn.load(str(tmp_path / "r.zarr"))


def test_corrupt_gzip_data(make_nifti, tmp_path):
    path, _ = make_nifti("run.nii.gz", shape=(7, 8, 9, 200))
    data = bytearray(Path(path).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64  # garbage inside the deflate stream
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(data))
    match = r"src='.*bad.nii.gz' is (corrupt|truncated or corrupt)"
    with pytest.raises(InputFileError, match=match):
        lazyconn.convert(str(bad), str(tmp_path / "bad.zarr"), progress=False)
    with pytest.raises(InputFileError, match=match):
        lazyconn.load(str(bad)).data.compute()


def test_plain_directory_is_not_an_image(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(
        InputFileError,
        match=r"src='.*folder' is a directory; expected a .nii or "
        r".nii.gz file \(or a lazyconn zarr store\)",
    ):
        lazyconn.load(str(folder))
