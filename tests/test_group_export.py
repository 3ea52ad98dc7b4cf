"""GroupConnectome results as users want them: vectorize / discard_diagonal as nilearn's
ConnectivityMeasure, and the subject matrices exported with subject and region names."""

import numpy as np
import pytest
import zarr

from lazyconn.connectome import ConnectivityMeasure
from lazyconn.exceptions import NotFittedError, OutputExistsError, ParameterError
from lazyconn.group import GroupConnectome
from lazyconn.maskers import NiftiSpheresMasker
from lazyconn.testing.group import TINY_SEEDS, tiny_study
from lazyconn.testing.reference import signals_per_run
from lazyconn.testing.s3 import FAKE_KEY, FAKE_SECRET

MASKER_KW = dict(seeds=TINY_SEEDS, radius=6, detrend=True, standardize="zscore_sample")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("export-study"), n_subjects=3, seed=2)


@pytest.fixture(scope="module")
def nilearn_signals(study):
    from nilearn.maskers import NiftiSpheresMasker as NilearnSpheres

    return signals_per_run(NilearnSpheres, study, **MASKER_KW)


def _group(**measure):
    return GroupConnectome(
        NiftiSpheresMasker(**MASKER_KW), ConnectivityMeasure(**measure), progress=False
    )


@pytest.fixture(scope="module")
def fitted(study):
    paths, confounds = study
    return _group(kind="correlation", vectorize=True).fit(paths, confounds=confounds)


# Three subjects: the geometric mean stops at 30 iterations just above 1e-7, nilearn's too.
@pytest.mark.filterwarnings("ignore:Maximum number of iterations:UserWarning")
@pytest.mark.parametrize(
    ("kind", "discard_diagonal"),
    [("correlation", True), ("covariance", False), ("tangent", False), ("tangent", True)],
)
def test_vectorize_and_discard_diagonal_match_nilearn(
    study, nilearn_signals, kind, discard_diagonal
):
    from nilearn.connectome import ConnectivityMeasure as NilearnMeasure

    paths, confounds = study
    measure = dict(kind=kind, vectorize=True, discard_diagonal=discard_diagonal)
    group = _group(**measure).fit(paths, confounds=confounds)
    reference = NilearnMeasure(**measure)
    expected = reference.fit_transform(nilearn_signals)
    assert group.subject_matrices_.shape == expected.shape == (3, 3 if discard_diagonal else 6)
    np.testing.assert_allclose(group.subject_matrices_, expected, atol=2e-5)
    # The group matrix stays square, as nilearn's mean_.
    np.testing.assert_allclose(group.group_matrix_, reference.mean_, atol=2e-5)


def test_flattening_is_not_part_of_the_store_key(study, tmp_path):
    paths, confounds = study
    cache = tmp_path / "cache"
    square = GroupConnectome(
        NiftiSpheresMasker(**MASKER_KW),
        ConnectivityMeasure(kind="correlation"),
        cache_dir=cache,
        progress=False,
    ).fit(paths, confounds=confounds)
    vectors = GroupConnectome(
        NiftiSpheresMasker(**MASKER_KW),
        ConnectivityMeasure(kind="correlation", vectorize=True, discard_diagonal=True),
        cache_dir=cache,
        progress=False,
    ).fit(paths, confounds=confounds)
    assert vectors.n_cached_ == 3
    rows, cols = np.tril_indices(3, k=-1)
    np.testing.assert_array_equal(
        vectors.subject_matrices_, square.subject_matrices_[:, rows, cols]
    )


def test_to_xarray_labels_subjects_and_regions(fitted):
    xr = pytest.importorskip("xarray")
    array = fitted.to_xarray()
    assert isinstance(array, xr.DataArray)
    assert array.dims == ("subject", "edge")
    assert list(array["subject"].values) == fitted.subjects_ == ["sub-00", "sub-01", "sub-02"]
    names = ["niftispheresmasker0", "niftispheresmasker1", "niftispheresmasker2"]
    assert fitted.regions_ == names
    # Lower triangle with the diagonal, row-major: (0,0), (1,0), (1,1), (2,0), (2,1), (2,2).
    assert list(array["region_row"].values) == [names[i] for i in (0, 1, 1, 2, 2, 2)]
    assert list(array["region_col"].values) == [names[j] for j in (0, 0, 1, 0, 1, 2)]
    np.testing.assert_array_equal(array.values, fitted.subject_matrices_)
    one = array.sel(subject="sub-01")
    edge = int(
        np.flatnonzero((one["region_row"] == names[2]) & (one["region_col"] == names[0]))[0]
    )
    assert one.values[edge] == fitted.subject_matrices_[1, 3]
    assert array.attrs["kind"] == "correlation" and "sqrt(2)" in array.attrs["layout"]


def test_to_xarray_of_square_matrices(study):
    pytest.importorskip("xarray")
    paths, confounds = study
    group = _group(kind="covariance").fit(paths[:2], confounds=confounds[:2])
    array = group.to_xarray()
    assert array.dims == ("subject", "region_row", "region_col")
    np.testing.assert_array_equal(
        array.sel(subject="sub-01", region_row="niftispheresmasker2").values,
        group.subject_matrices_[1, 2],
    )


def test_npz_export_round_trip(fitted, tmp_path):
    path = fitted.export(tmp_path / "results.npz")
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["matrices"], fitted.subject_matrices_)
        np.testing.assert_array_equal(data["group_matrix"], fitted.group_matrix_)
        assert list(data["subjects"]) == fitted.subjects_
        assert list(data["regions"]) == fitted.regions_
        assert str(data["kind"]) == "correlation" and bool(data["vectorize"])
        assert not bool(data["discard_diagonal"])
        np.testing.assert_array_equal(data["edges"], np.stack(np.tril_indices(3), axis=1))
    with pytest.raises(OutputExistsError, match=r"path='.*results\.npz' already exists"):
        fitted.export(tmp_path / "results.npz")
    fitted.export(tmp_path / "results.npz", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["results.npz"]  # no partial file left


def test_zarr_export_round_trip(fitted, tmp_path):
    root = zarr.open_group(fitted.export(tmp_path / "results.zarr"), mode="r")
    np.testing.assert_array_equal(root["matrices"][...], fitted.subject_matrices_)
    assert root["matrices"].chunks == (1, 6)
    assert root.attrs["subjects"] == fitted.subjects_
    assert root.attrs["regions"] == fitted.regions_
    assert root.attrs["complete"] is True and root.attrs["kind"] == "correlation"


@pytest.mark.s3
def test_zarr_export_to_a_bucket_keeps_credentials_out(fitted, s3_bucket):
    import s3fs

    bucket, options = s3_bucket
    url = fitted.export(f"{bucket}/results/study.zarr", storage_options=options)
    root = zarr.open_group(url, mode="r", storage_options=options)
    np.testing.assert_array_equal(root["matrices"][...], fitted.subject_matrices_)
    assert root.attrs["complete"] is True
    fs = s3fs.S3FileSystem(**options)
    for key in fs.find(f"{bucket}/results"):
        content = fs.cat_file(key)
        assert FAKE_SECRET.encode() not in content and FAKE_KEY.encode() not in content


def test_export_errors(fitted, tmp_path):
    with pytest.raises(ParameterError, match=r"path='.*results\.csv' has no known extension"):
        fitted.export(tmp_path / "results.csv")
    with pytest.raises(NotFittedError, match="GroupConnectome instance is not fitted yet"):
        _group().export(tmp_path / "results.npz")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        _group().to_xarray()
