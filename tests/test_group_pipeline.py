"""GroupConnectome against nilearn's loop over subjects, its results store, errors, schedulers."""

import time

import nibabel as nib
import numpy as np
import pytest

from lazyconn.connectome import ConnectivityMeasure
from lazyconn.exceptions import ParameterError, ParameterTypeError, SubjectError
from lazyconn.group import GroupConnectome
from lazyconn.maskers import NiftiSpheresMasker
from lazyconn.testing.group import TINY_SEEDS, tiny_study
from lazyconn.testing.laziness import inaccessible_dask_array, raise_if_dask_computes
from lazyconn.testing.reference import signals_per_run

MASKER_KW = dict(
    seeds=TINY_SEEDS,
    radius=6,
    detrend=True,
    standardize="zscore_sample",
    low_pass=0.2,
    high_pass=0.02,
    t_r=2.0,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    directory = tmp_path_factory.mktemp("study")
    return tiny_study(directory, n_subjects=4)


@pytest.fixture(scope="module")
def nilearn_signals(study):
    from nilearn.maskers import NiftiSpheresMasker as NilearnSpheres

    return signals_per_run(NilearnSpheres, study, **MASKER_KW)


def _group(kind="partial correlation", **kw):
    kw.setdefault("progress", False)
    return GroupConnectome(NiftiSpheresMasker(**MASKER_KW), ConnectivityMeasure(kind=kind), **kw)


@pytest.mark.parametrize("kind", ["partial correlation", "correlation", "tangent"])
def test_matches_nilearn_loop_over_subjects(study, nilearn_signals, kind):
    from nilearn.connectome import ConnectivityMeasure as NilearnMeasure

    paths, confounds = study
    group = _group(kind).fit(paths, confounds=confounds)
    reference = NilearnMeasure(kind=kind)
    expected = reference.fit_transform(nilearn_signals)
    assert group.subjects_ == [f"sub-{i:02d}" for i in range(4)]  # BIDS entities
    assert group.subject_matrices_.shape == (4, 3, 3) and not group.failed_
    np.testing.assert_allclose(group.subject_matrices_, expected, atol=2e-5)
    np.testing.assert_allclose(group.group_matrix_, reference.mean_, atol=2e-5)
    assert group.connectivity_.mean_ is group.group_matrix_
    assert set(group.timings_["subjects"]) == set(group.subjects_)


def test_results_store_reuses_only_what_is_valid(study, tmp_path):
    paths, confounds = study
    cache = tmp_path / "cache"
    first = _group(cache_dir=cache).fit(paths, confounds=confounds)
    assert first.n_cached_ == 0
    again = _group(cache_dir=cache).fit(paths, confounds=confounds)
    assert again.n_cached_ == 4 and again.timings_["subjects"] == {}
    np.testing.assert_array_equal(again.subject_matrices_, first.subject_matrices_)
    np.testing.assert_array_equal(again.group_matrix_, first.group_matrix_)
    # A changed parameter (masker or measure) never reuses a stale result.
    other = GroupConnectome(
        NiftiSpheresMasker(**{**MASKER_KW, "radius": 5}),
        ConnectivityMeasure(kind="partial correlation"),
        cache_dir=cache,
        progress=False,
    ).fit(paths, confounds=confounds)
    assert other.n_cached_ == 0
    assert _group("correlation", cache_dir=cache).fit(paths, confounds=confounds).n_cached_ == 0
    # Changed confounds of one subject: only that one is recomputed.
    confounds2 = list(confounds)
    confounds2[2] = confounds[2][:, :1]
    assert _group(cache_dir=cache).fit(paths, confounds=confounds2).n_cached_ == 3


def test_rewritten_input_file_is_recomputed(tmp_path):
    paths, confounds = tiny_study(tmp_path, n_subjects=2, seed=5)
    cache = tmp_path / "cache"
    before = _group(cache_dir=cache).fit(paths, confounds=confounds)
    img = nib.load(paths[1])
    time.sleep(0.01)
    nib.save(
        nib.Nifti1Image(np.asarray(img.dataobj)[..., ::-1].copy(), img.affine, img.header),
        paths[1],
    )
    after = _group(cache_dir=cache).fit(paths, confounds=confounds)
    assert after.n_cached_ == 1
    assert list(after.timings_["subjects"]) == ["sub-01"]
    np.testing.assert_array_equal(after.subject_matrices_[0], before.subject_matrices_[0])


def test_bad_subject_is_named_and_skipped(study, tmp_path):
    paths, confounds = study
    broken = tmp_path / "sub-bad_bold.nii"
    broken.write_bytes(b"not a nifti file")
    imgs = [paths[0], str(broken), paths[1]]
    confs = [confounds[0], None, confounds[1]]
    with pytest.raises(SubjectError, match=r"subject 'sub-bad' \(.*sub-bad_bold\.nii\) failed"):
        _group().fit(imgs, confounds=confs)
    group = _group(on_error="skip").fit(imgs, confounds=confs)
    assert group.subjects_ == ["sub-00", "sub-01"]
    assert list(group.failed_) == ["sub-bad"] and "failed" in group.failed_["sub-bad"]
    reference = _group().fit(paths[:2], confounds=confounds[:2])
    np.testing.assert_array_equal(group.group_matrix_, reference.group_matrix_)
    with pytest.raises(SubjectError, match=r"every subject failed \(1\); the first: subject"):
        _group(on_error="skip").fit([str(broken)])


def test_bad_inputs_have_clear_errors(study):
    paths, confounds = study
    with pytest.raises(
        ParameterTypeError,
        match=r"imgs='.*sub-00_bold.nii' is a single str; "
        r"expected a list of runs, one per subject",
    ):
        _group().fit(paths[0])
    with pytest.raises(ParameterError, match=r"confounds has 3 entries but imgs has 4 subjects"):
        _group().fit(paths, confounds=confounds[:3])
    with pytest.raises(
        ParameterTypeError,
        match=r"confounds=<ndarray of shape \(40, 2\)> has type ndarray; expected None or a list",
    ):
        _group().fit(paths, confounds=confounds[0])
    with pytest.raises(ParameterError, match=r"subjects has duplicate names \['a'\]"):
        _group().fit(paths[:2], subjects=["a", "a"])
    with pytest.raises(ParameterError, match=r"imgs=\[\] is empty"):
        _group().fit([])
    with pytest.raises(
        ParameterTypeError,
        match=r"masker='spheres' has type str; expected a "
        r"lazyconn masker",
    ):
        GroupConnectome("spheres").fit(paths)
    with pytest.raises(ParameterTypeError, match=r"connectivity='tangent' has type str"):
        GroupConnectome(NiftiSpheresMasker(**MASKER_KW), "tangent").fit(paths)
    with pytest.raises(
        ParameterError,
        match=r"on_error='ignore' is not valid; expected one of "
        r"'raise', 'skip'",
    ):
        _group(on_error="ignore").fit(paths)
    with pytest.raises(ParameterError, match=r"n_workers=0 is not valid"):
        _group(n_workers=0).fit(paths)


def test_preparing_the_graph_reads_no_voxels():
    from lazyconn.image import LazyImage

    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    imgs = [
        LazyImage(inaccessible_dask_array((7, 8, 9, 20), ((3, 4), (5, 3), (4, 5), (20,))), affine)
        for _ in range(3)
    ]
    group = _group()
    with raise_if_dask_computes():
        masker = group._fitted_masker()
        records, _ = group._subjects(imgs, None, None, None, masker, ConnectivityMeasure())
    assert [r.name for r in records] == ["subject-0", "subject-1", "subject-2"]
    # Same (inaccessible) data -> same key: in-memory images are keyed by their dask token.
    assert len({r.key for r in records}) == 1


def test_labels_masker_matches_nilearn(study):
    from nilearn.connectome import ConnectivityMeasure as NilearnMeasure
    from nilearn.maskers import NiftiLabelsMasker as NilearnLabels

    from lazyconn.maskers import NiftiLabelsMasker

    paths, confounds = study
    img = nib.load(paths[0])
    ijk = np.indices(img.shape[:3]).reshape(3, -1).T
    world = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    labels = np.zeros(img.shape[:3], dtype=np.int32)
    for k, centre in enumerate(TINY_SEEDS, start=1):
        i, j, m = ijk[np.linalg.norm(world - np.asarray(centre), axis=1) <= 7.0].T
        labels[i, j, m] = k
    labels_img = nib.Nifti1Image(labels, img.affine)
    kw = dict(detrend=True, standardize="zscore_sample")
    group = GroupConnectome(
        NiftiLabelsMasker(labels_img, **kw),
        ConnectivityMeasure(kind="correlation"),
        progress=False,
    )
    group.fit(paths, confounds=confounds)
    series = [
        NilearnLabels(labels_img, **kw).fit_transform(p, confounds=c)
        for p, c in zip(paths, confounds, strict=True)
    ]
    reference = NilearnMeasure(kind="correlation")
    np.testing.assert_allclose(group.subject_matrices_, reference.fit_transform(series), atol=2e-5)
    np.testing.assert_allclose(group.group_matrix_, reference.mean_, atol=2e-5)


def test_a_worker_process_reuses_one_masker_per_parameters():
    import pickle

    from lazyconn.group.pipeline import _MAX_PROCESS_MASKERS, _ConnectomeStep

    step = _ConnectomeStep(
        NiftiSpheresMasker(**MASKER_KW).fit(), ConnectivityMeasure(), token="token-a"
    )
    # Each task unpickles its own step; the masker (and its per-grid caches) is shared.
    first = pickle.loads(pickle.dumps(step))._masker()
    assert pickle.loads(pickle.dumps(step))._masker() is first
    others = [
        _ConnectomeStep(step.masker, step.connectivity, token=f"t{i}")._masker()
        for i in range(_MAX_PROCESS_MASKERS)
    ]
    assert all(o is not first for o in others)
    # Bounded: the oldest entry was dropped, so a new copy is used for token-a.
    assert pickle.loads(pickle.dumps(step))._masker() is not first
