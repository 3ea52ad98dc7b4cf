"""Every example in examples/ runs on small synthetic data (so they never rot), checked against
nilearn on the same files or against the planted ground truth.

Each example exposes ``main(small=False, plot=True, data_dir=None, output_dir=None)``.
Plots are off here (nilearn's glass-brain plots take seconds each); ``test_demo`` covers
plotting through ``lazyconn demo``.
"""

import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DMN = [(0, -52, 18), (-46, -68, 32), (46, -68, 32), (1, 50, -5)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("example-data")


def _nilearn_dmn(func, confounds, t_r):
    from nilearn.maskers import NiftiSpheresMasker

    # nilearn cannot read fMRIPrep's n/a; lazyconn fills the first row with the second's.
    table = pd.read_csv(confounds, sep="\t", na_values="n/a").bfill(limit=1).to_numpy()
    masker = NiftiSpheresMasker(
        DMN,
        radius=8,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=t_r,
    )
    return masker.fit_transform(func, confounds=table)


def _check_sphere_based_connectome(out):
    from nilearn.connectome import ConnectivityMeasure

    group = out["group"]
    data = out["dataset"]
    series = [_nilearn_dmn(f, c, data.t_r) for f, c in zip(data.func, data.confounds, strict=True)]
    np.testing.assert_allclose(out["dmn_time_series"], series[0], atol=2e-4)
    reference = ConnectivityMeasure(kind="partial correlation")
    per_subject = reference.fit_transform(series)
    np.testing.assert_allclose(out["dmn_partial_correlation"], per_subject[0], atol=1e-4)
    np.testing.assert_allclose(group.subject_matrices_, per_subject, atol=1e-4)
    np.testing.assert_allclose(group.group_matrix_, reference.mean_, atol=1e-4)
    for name in ("power", "dosenbach"):
        cov = out[f"{name}_covariance"]
        # standardized signals: a correlation-like covariance, strengths normalised to 1
        np.testing.assert_allclose(np.diag(cov), 1.0, atol=0.05)
        assert out[f"{name}_strength"].max() == pytest.approx(1.0)
    assert out["power_covariance"].shape == (44, 44)
    assert out["dosenbach_covariance"].shape == (32, 32)


def _check_group_connectome(out):
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.maskers import NiftiSpheresMasker

    study = out["study"]
    group, again = out["group"], out["again"]
    assert again.n_cached_ == len(study.func) and group.n_cached_ == 0
    np.testing.assert_array_equal(again.group_matrix_, group.group_matrix_)
    series = []
    for func, conf in zip(study.func, group_confounds(study), strict=True):
        masker = NiftiSpheresMasker(
            seeds=study.region_coords,
            radius=8,
            detrend=True,
            standardize="zscore_sample",
            low_pass=0.1,
            high_pass=0.01,
            t_r=study.t_r,
        )
        series.append(masker.fit_transform(func, confounds=conf))
    reference = ConnectivityMeasure(kind="correlation")
    np.testing.assert_allclose(group.subject_matrices_, reference.fit_transform(series), atol=1e-4)
    tangent = ConnectivityMeasure(kind="tangent")
    np.testing.assert_allclose(
        out["tangent"].subject_matrices_, tangent.fit_transform(series), atol=1e-3
    )
    # The planted truth is recovered, and better with the confounds than without.
    assert out["recovery"] > 0.7
    assert out["recovery"] > out["recovery_without_confounds"] + 0.1


def group_confounds(study):
    from nilearn.interfaces.fmriprep import load_confounds

    # nilearn's own load_confounds, with the example's strategy
    strategy = ("high_pass", "motion", "wm_csf", "compcor")
    return load_confounds(study.func, strategy=strategy, motion="basic")[0]


def _check_roi_extraction(out):
    import nibabel as nib
    from nilearn import image as nimage
    from scipy import stats as sstats

    data, labels = out["dataset"], out["labels"]
    # The lazy t-test gives scipy's p map on nilearn's smoothed run (float32 data).
    smoothed = nimage.get_data(nimage.smooth_img(data.func[0], fwhm=6))
    _, p_values = sstats.ttest_ind(
        smoothed[..., labels == "face"], smoothed[..., labels == "house"], axis=-1
    )
    np.testing.assert_allclose(
        -np.log10(out["p_values"]), -np.log10(p_values), atol=1e-3, equal_nan=True
    )
    # Every component is a planted region inside the VT mask; the region planted outside
    # it is gone; the two ROIs are the face regions, each covered almost whole.
    effects = np.asarray(nib.load(data.effects_img).dataobj)
    rois = out["roi_labels"]
    outside = [k + 1 for k, inside in enumerate(data.effect_in_vt) if not inside]
    assert not np.isin(effects[rois > 0], outside).any()
    covered = set()
    for label in range(1, out["n_labels"] + 1):
        planted = effects[(rois == label) & (effects > 0)]
        assert planted.size and len(np.unique(planted)) == 1
        covered.add(int(planted[0]))
    for roi in (out["first_roi"], out["second_roi"]):
        (k,) = np.unique(effects[(roi > 0) & (effects > 0)])
        assert data.effect_conditions[k - 1] == "face" and data.effect_in_vt[k - 1]
        assert (roi[effects == k] > 0).mean() >= 0.8
    assert len(covered) >= 3
    # Face volumes have the highest mean signal in the face ROIs (the boxplots).
    names = list(out["condition_names"])
    for X in (out["X1"], out["X2"]):
        assert names[int(np.argmax(X.mean(axis=0)))] == "face"
    saved = np.asarray(nib.load(out["atlas_path"]).dataobj)
    np.testing.assert_array_equal(saved, rois)


def _nilearn_regions_pipeline(dataset, confounds):
    """The seed's pipeline with nilearn alone, on the same study (confounds as the example)."""
    import warnings

    from nilearn.connectome import ConnectivityMeasure
    from nilearn.decomposition import DictLearning
    from nilearn.regions import RegionExtractor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = (
            DictLearning(
                n_components=8, smoothing_fwhm=6.0, random_state=0, standardize="zscore_sample"
            )
            .fit(dataset.func, confounds=confounds)
            .components_img_
        )
        extractor = RegionExtractor(maps, **REGION_PARAMS).fit()
        series = [
            extractor.transform(f, confounds=c)
            for f, c in zip(dataset.func, confounds, strict=True)
        ]
    return extractor, ConnectivityMeasure(kind="correlation").fit(series).mean_


REGION_PARAMS = dict(
    threshold=0.5,
    thresholding_strategy="ratio_n_voxels",
    extractor="local_regions",
    standardize="zscore_sample",
    standardize_confounds=True,
    min_region_size=1350,
)


def _check_extract_regions(out):
    import warnings

    from nilearn.connectome import ConnectivityMeasure
    from nilearn.regions import RegionExtractor

    from lazyconn.datasets.recovery import connectome_recovery, match_regions

    data = out["dataset"]
    ours = out["extractor"]
    # nilearn's RegionExtractor on lazyconn's maps: identical regions, same connectomes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = RegionExtractor(out["components_img"], **REGION_PARAMS).fit()
        series = [
            ref.transform(f, confounds=c) for f, c in zip(data.func, out["confounds"], strict=True)
        ]
    np.testing.assert_array_equal(ours.regions_img_.get_fdata(), ref.regions_img_.get_fdata())
    assert ours.index_ == list(ref.index_)
    per_subject = ConnectivityMeasure(kind="correlation").fit_transform(series)
    np.testing.assert_allclose(out["group"].subject_matrices_, per_subject, atol=1e-4)
    np.testing.assert_allclose(out["mean_correlations"], per_subject.mean(0), atol=1e-4)
    # the planted truth: recovered at least as well as by nilearn's own pipeline
    nil_extractor, nil_mean = _nilearn_regions_pipeline(data, out["confounds"])
    nil_match = match_regions(nil_extractor.regions_img_, data.labels_img)
    nil_rec = connectome_recovery(nil_mean, nil_match.match, data.region_correlation)
    assert out["regions_match"].mean_dice >= nil_match.mean_dice - 0.02
    assert out["recovery"].r >= nil_rec.r - 0.05
    assert out["recovery"].coverage >= nil_rec.coverage - 0.05
    assert out["recovery"].r > 0.8


CHECKS = {
    "plot_extract_regions_dictlearning_maps": _check_extract_regions,
    "plot_sphere_based_connectome": _check_sphere_based_connectome,
    "group_connectome": _check_group_connectome,
    "plot_roi_extraction": _check_roi_extraction,
}


def test_every_example_has_a_check():
    assert {p.stem for p in EXAMPLES} == set(CHECKS)


# GraphicalLassoCV on 60 samples of synthetic noise converges loosely; that is the data.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_on_small_data(path, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(path), run_name="example")
    out = namespace["main"](
        small=True, plot=False, data_dir=data_dir / path.stem, output_dir=tmp_path / "out"
    )
    CHECKS[path.stem](out)
