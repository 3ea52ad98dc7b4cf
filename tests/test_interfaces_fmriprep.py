"""lazyconn.interfaces.fmriprep: equal to nilearn 0.14.1's load_confounds on fMRIPrep-like
folders (the synthetic study with every strategy column), and the errors of bad input."""

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces import fmriprep as nilearn_fmriprep

from lazyconn.datasets import make_synthetic_fmri
from lazyconn.exceptions import (
    AllVolumesRemovedError,
    ConfoundsNotFoundError,
    MissingConfoundsError,
    ParameterError,
)
from lazyconn.interfaces.fmriprep import load_confounds, load_confounds_strategy


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_synthetic_fmri(
        2,
        n_timepoints=40,
        resolution=8,
        n_networks=2,
        all_confounds=True,
        data_dir=tmp_path_factory.mktemp("fmriprep"),
    )


def _same(ours, theirs):
    (conf_a, mask_a), (conf_b, mask_b) = ours, theirs
    if isinstance(conf_b, pd.DataFrame):
        conf_a, mask_a, conf_b, mask_b = [conf_a], [mask_a], [conf_b], [mask_b]
    assert len(conf_a) == len(conf_b)
    for a, b, ma, mb in zip(conf_a, conf_b, mask_a, mask_b, strict=True):
        assert list(a.columns) == list(b.columns)
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12, atol=1e-12)
        if mb is None:
            assert ma is None
        else:
            np.testing.assert_array_equal(ma, mb)


@pytest.mark.parametrize(
    ("denoise_strategy", "kwargs"),
    [
        ("simple", {}),
        ("simple", {"global_signal": "full", "motion": "power2", "demean": False}),
        ("scrubbing", {}),
        ("scrubbing", {"fd_threshold": 0.2, "std_dvars_threshold": 1.1, "scrub": 0}),
        ("compcor", {}),
        ("compcor", {"compcor": "anat_separated", "n_compcor": 1}),
        ("compcor", {"compcor": "temporal_anat_combined", "n_compcor": 2}),
    ],
)
def test_strategies_equal_nilearn(study, denoise_strategy, kwargs):
    ours = load_confounds_strategy(study.func, denoise_strategy, **kwargs)
    theirs = nilearn_fmriprep.load_confounds_strategy(study.func, denoise_strategy, **kwargs)
    _same(ours, theirs)
    if denoise_strategy == "scrubbing" and kwargs:
        assert ours[1][0] is not None and 0 < len(ours[1][0]) < 40  # some volumes scrubbed


def test_ica_aroma_and_custom_strategies_equal_nilearn(study):
    aroma = [f.replace("desc-preproc", "desc-smoothAROMAnonaggr") for f in study.func]
    _same(
        load_confounds_strategy(aroma, "ica_aroma"),
        nilearn_fmriprep.load_confounds_strategy(aroma, "ica_aroma"),
    )
    kwargs = {
        "strategy": ("motion", "ica_aroma", "high_pass", "global_signal"),
        "ica_aroma": "basic",
        "motion": "derivatives",
        "global_signal": "power2",
    }
    single = study.func[0]
    _same(load_confounds(single, **kwargs), nilearn_fmriprep.load_confounds(single, **kwargs))
    assert isinstance(load_confounds(single)[0], pd.DataFrame)  # one run in, one table out


def test_non_steady_state_volumes_and_urls(study, tmp_path):
    # A copy of one run's folder whose table flags two non-steady-state volumes.
    folder = tmp_path / "sub-01" / "func"
    shutil.copytree(Path(study.func[0]).parent, folder)
    table_path = next(folder.glob("*_desc-confounds_timeseries.tsv"))
    table = pd.read_csv(table_path, sep="\t")
    for k in range(2):
        table[f"non_steady_state_outlier_{k:02d}"] = np.eye(len(table))[k].astype(int)
    table.to_csv(table_path, sep="\t", index=False, na_rep="n/a")
    func = str(next(folder.glob("*_desc-preproc_bold.nii.gz")))
    theirs = nilearn_fmriprep.load_confounds_strategy(func, "compcor")
    _same(load_confounds_strategy(func, "compcor"), theirs)
    assert theirs[1].tolist() == list(range(2, len(table)))
    # the same through an fsspec URL
    _same(load_confounds_strategy("file://" + func, "compcor"), theirs)


def test_new_columns_are_what_they_say(study):
    table = pd.read_csv(study.confounds[1], sep="\t", na_values="n/a")
    data = nib.load(study.func[1]).get_fdata()
    mask = nib.load(study.mask).get_fdata() > 0
    inside = data[mask]  # (voxels, time)
    dvars = np.sqrt(np.mean(np.diff(inside, axis=1) ** 2, axis=0))
    np.testing.assert_allclose(table["dvars"][1:], dvars, rtol=1e-5)
    np.testing.assert_allclose(table["std_dvars"][1:], dvars / np.median(dvars), rtol=1e-5)
    np.testing.assert_allclose(table["csf_power2"], table["csf"] ** 2, rtol=1e-12)
    np.testing.assert_allclose(
        table["rot_y_derivative1_power2"], table["rot_y_derivative1"] ** 2, rtol=1e-12
    )
    # the basic study keeps its table: none of the strategy columns, no sidecar
    assert "std_dvars" not in pd.read_csv(study.reduced_confounds[0], sep="\t")


def test_a_run_without_a_confounds_file_is_named(study, tmp_path):
    lonely = tmp_path / "sub-09_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    shutil.copy(study.func[0], lonely)
    with pytest.raises(
        ConfoundsNotFoundError,
        match=r"img_files\[1\]='.*sub-09_.*' has no fMRIPrep confounds file next to it; "
        r"expected 'sub-09_task-rest_space-MNI152NLin2009cAsym_desc-confounds_timeseries.tsv'",
    ):
        load_confounds([study.func[0], str(lonely)])
    with pytest.raises(ValueError):  # nilearn raises ValueError here: ours is one too
        load_confounds(str(lonely))
    with pytest.raises(ParameterError, match=r"img_files='.*run.nii.gz' is not an fMRIPrep"):
        load_confounds(str(tmp_path / "run.nii.gz"))


def test_unknown_strategy_names_the_choices(study):
    with pytest.raises(
        ParameterError,
        match=r"denoise_strategy='scrub' is not valid; expected one of 'simple', "
        r"'scrubbing', 'compcor', 'ica_aroma'",
    ):
        load_confounds_strategy(study.func, "scrub")
    with pytest.raises(ParameterError, match=r"strategy='motoin' is not valid; expected one of"):
        load_confounds(study.func, strategy=("motoin", "high_pass"))
    with pytest.raises(ParameterError, match=r"has 'compcor' without 'high_pass'"):
        load_confounds(study.func, strategy=("compcor",))
    with pytest.raises(ParameterError, match=r"motion='fuller' is not valid"):
        load_confounds(study.func, motion="fuller")


def test_missing_columns_are_named(tmp_path, study):
    # The basic synthetic table (no all_confounds) lacks the quadratic terms and the sidecar.
    basic = make_synthetic_fmri(
        1, n_timepoints=40, resolution=8, n_networks=2, data_dir=tmp_path / "basic"
    )
    with pytest.raises(
        MissingConfoundsError,
        match=r"lacks columns the strategy needs: 'motion' \(motion='full'\) needs "
        r"\['trans_x_power2', 'trans_x_derivative1_power2', ",
    ):
        load_confounds_strategy(basic.func, "simple")
    with pytest.raises(MissingConfoundsError, match=r"'scrub' needs \['std_dvars'\]"):
        load_confounds(basic.func, strategy=("scrub",))
    with pytest.raises(
        ConfoundsNotFoundError, match=r"strategy 'compcor' .* needs the JSON sidecar"
    ):
        load_confounds_strategy(basic.func, "compcor")
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds_strategy(basic.func, "simple")  # nilearn refuses too


def test_scrubbing_a_run_too_short_to_keep_a_volume(tmp_path, study):
    folder = tmp_path / "sub-01" / "func"
    folder.mkdir(parents=True)
    func = folder / "sub-01_task-rest_desc-preproc_bold.nii.gz"
    func.write_bytes(b"")  # only the name is used
    table = pd.read_csv(study.confounds[0], sep="\t").iloc[:4]
    table.loc[2, "framewise_displacement"] = 2.0  # one outlier: scrub=5 drops the short rest
    table.to_csv(folder / "sub-01_task-rest_desc-confounds_timeseries.tsv", sep="\t", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert nilearn_fmriprep.load_confounds_strategy(str(func), "scrubbing")[1].size == 0
    with pytest.raises(
        AllVolumesRemovedError,
        match=r"img_files='.*sub-01_task-rest_desc-preproc_bold.nii.gz': every one of its 4 "
        r"volumes is a motion outlier .*scrub=5, fd_threshold=0.5",
    ):
        load_confounds_strategy(str(func), "scrubbing")
