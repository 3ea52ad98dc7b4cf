"""Bad data says so: confounds headers that do not fit, an output folder for one run."""

import re

import numpy as np
import pytest

import lazyconn
from lazyconn import cli
from lazyconn.exceptions import InputFileError
from lazyconn.io.confounds import read_confounds_file


def test_confounds_header_with_fewer_names_than_columns_is_refused(tmp_path, rng):
    path = tmp_path / "confounds.tsv"
    rows = "\n".join("\t".join(f"{v:.4f}" for v in row) for row in rng.standard_normal((6, 3)))
    path.write_text("trans_x\trot_y\n" + rows + "\n")
    with pytest.raises(
        InputFileError, match=r"confounds\.tsv' has 2 names in its header but 3 columns"
    ):
        read_confounds_file(path)
    path.write_text("trans_x\trot_y\tcsf\n" + rows + "\n")
    values, names = read_confounds_file(path)
    assert names == ["trans_x", "rot_y", "csf"] and values.shape == (6, 3)


def test_convert_one_run_into_a_new_output_folder(make_nifti, tmp_path):
    path, ref = make_nifti("run.nii.gz")
    out = tmp_path / "out"
    assert cli.main(["convert", path, "-o", f"{out}/", "--no-progress"]) == 0
    np.testing.assert_array_equal(lazyconn.load(out / "run.zarr").data.compute(), ref)


def test_all_nan_run_fails_naming_the_subject(tmp_path):
    """nilearn warns and reads NaN as zeros (zero signals, a singular covariance later);
    lazyconn fails at once, naming the subject and its file."""
    import nibabel as nib

    from lazyconn.exceptions import SubjectError
    from lazyconn.group.pipeline import GroupConnectome
    from lazyconn.maskers import NiftiSpheresMasker
    from lazyconn.testing.group import TINY_SEEDS, tiny_study

    paths, _ = tiny_study(tmp_path, n_subjects=2, shape=(8, 9, 10, 30))
    img = nib.load(paths[1])
    data = np.full(img.shape, np.nan, dtype=np.float32)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), paths[1])
    group = GroupConnectome(NiftiSpheresMasker(TINY_SEEDS, radius=4, t_r=2.0), progress=False)
    with pytest.raises(
        SubjectError,
        match=r"subject 'sub-01' \(.*sub-01_bold.nii\) failed: .*regions has constant",
    ):
        group.fit(paths)
    skipped = GroupConnectome(
        NiftiSpheresMasker(TINY_SEEDS, radius=4, t_r=2.0), progress=False, on_error="skip"
    ).fit(paths)
    assert skipped.subjects_ == ["sub-00"] and "all-NaN" in skipped.failed_["sub-01"]


def test_nan_voxels_warn_naming_the_subject_and_read_as_zeros_as_nilearn(tmp_path):
    """Some NaN voxels: nilearn's spheres masker warns ('Non-finite values detected') and
    reads them as zeros; GroupConnectome gives nilearn's matrix and one DataWarning naming
    the subject and its file, again when the subject comes from the results store."""
    import warnings

    import nibabel as nib
    from nilearn.connectome import ConnectivityMeasure as NilearnCM
    from nilearn.maskers import NiftiSpheresMasker as NilearnSpheres

    from lazyconn.connectome import ConnectivityMeasure
    from lazyconn.exceptions import DataWarning
    from lazyconn.group.pipeline import GroupConnectome
    from lazyconn.maskers import NiftiSpheresMasker
    from lazyconn.testing.group import TINY_SEEDS, tiny_study

    paths, _ = tiny_study(tmp_path, n_subjects=2, shape=(8, 9, 10, 30))
    img = nib.load(paths[1])
    data = np.asarray(img.dataobj).astype(np.float32)
    data[3:5, 3:5, 3:5, :] = np.nan  # whole time courses, inside the spheres
    data[1, 1, 1, 5] = np.inf  # one sample
    nib.save(nib.Nifti1Image(data, img.affine, img.header), paths[1])
    kw = {"radius": 6, "t_r": 2.0, "standardize": "zscore_sample"}
    with pytest.warns(UserWarning, match=r"Non-finite values detected"):
        ref_signals = NilearnSpheres(TINY_SEEDS, **kw).fit_transform(paths[1])
    ref = NilearnCM(kind="covariance").fit_transform([ref_signals])[0]

    def fit():
        group = GroupConnectome(
            NiftiSpheresMasker(TINY_SEEDS, **kw),
            ConnectivityMeasure(kind="covariance"),
            cache_dir=tmp_path / "cache",
            progress=False,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            group.fit(paths)
        return group, [w for w in caught if issubclass(w.category, DataWarning)]

    for n_cached in (0, 2):
        group, caught = fit()
        assert group.n_cached_ == n_cached
        assert len(caught) == 1, [str(w.message) for w in caught]
        message = str(caught[0].message)
        assert re.search(
            r"subject 'sub-01' \(.*sub-01_bold\.nii\): 241 non-finite values", message
        )
        assert "read as zeros" in message
        np.testing.assert_allclose(group.subject_matrices_[1], ref, atol=1e-5)


def test_the_nan_count_reads_each_chunk_of_a_store_once(tmp_path, monkeypatch):
    """The non-finite count is computed in the masker's pass: every chunk of the store is
    read once per subject (before, the array's graph fusion inlined each read into the
    masker's task and the count's graph read the chunk a second time)."""
    import collections
    import warnings

    import nibabel as nib

    from lazyconn.connectome import ConnectivityMeasure
    from lazyconn.exceptions import DataWarning
    from lazyconn.group.pipeline import GroupConnectome
    from lazyconn.io.convert import convert
    from lazyconn.io.store import CompleteStore
    from lazyconn.maskers import NiftiSpheresMasker
    from lazyconn.testing.group import TINY_SEEDS, tiny_study

    paths, _ = tiny_study(tmp_path, n_subjects=1, shape=(8, 9, 10, 30))
    img = nib.load(paths[0])
    data = np.asarray(img.dataobj).astype(np.float32)
    data[3:5, 3:5, 3:5, :] = np.nan  # 8 voxels x 30 volumes, inside the spheres
    nib.save(nib.Nifti1Image(data, img.affine, img.header), paths[0])
    store = str(tmp_path / "sub-00.zarr")
    convert(paths[0], store, chunks=(4, 5, 5, 30), progress=False)

    reads = collections.Counter()
    # every read of a local store's chunks goes through it: zarr's (get, in a worker
    # thread) and lazyconn's whole-chunk decode (read_chunk, in the calling thread)
    local_chunk = CompleteStore.local_chunk

    def counting_local_chunk(self, key, *args, **kwargs):
        if key.startswith("0/c/"):
            reads[key] += 1
        return local_chunk(self, key, *args, **kwargs)

    monkeypatch.setattr(CompleteStore, "local_chunk", counting_local_chunk)
    group = GroupConnectome(
        NiftiSpheresMasker(TINY_SEEDS, radius=6, t_r=2.0),
        ConnectivityMeasure(kind="covariance"),
        progress=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        group.fit([store])
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1 and "240 non-finite values" in messages[0]
    assert len(reads) > 1, reads  # several chunks, the spheres touch more than one
    assert set(reads.values()) == {1}, reads


@pytest.mark.parametrize(
    "planted",
    [
        {},  # all finite
        {(0, 1, 2, 3): np.nan, (1, 0, 0, 0): np.inf, (2, 2, 2, 2): -np.inf},
        {(0, 0, 0, 0): 3e38, (0, 0, 0, 1): 3e38},  # finite values whose float32 sum overflows
        {(0, 0, 0, 0): 3e38, (0, 0, 0, 1): 3e38, (3, 3, 3, 3): np.nan},
    ],
)
def test_nonfinite_count_of_a_chunk_equals_numpys(planted, monkeypatch):
    from lazyconn.ops import weights
    from lazyconn.ops.weights import count_nonfinite as _count_nonfinite

    block = np.random.default_rng(0).normal(size=(4, 5, 6, 7)).astype(np.float32)
    for where, value in planted.items():
        block[where] = value
    assert _count_nonfinite(block) == int(np.sum(~np.isfinite(block)))
    assert _count_nonfinite(block.astype(np.int16)) == 0  # integers are always finite
    # counted in pieces (a short last one): C, F (zarr's blocks) and non-contiguous blocks
    monkeypatch.setattr(weights, "_COUNT_PIECE", 97)
    for b in (block, np.asfortranarray(block), block[:, :, ::2], block[..., 3:]):
        assert _count_nonfinite(b) == int(np.sum(~np.isfinite(b)))
