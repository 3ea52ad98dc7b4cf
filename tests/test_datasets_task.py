"""make_synthetic_task_fmri: a Haxby-like layout, a block design, planted effects."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from lazyconn.datasets import make_synthetic_task_fmri
from lazyconn.exceptions import OutputExistsError, ParameterError, ParameterTypeError

SMALL = {"n_timepoints": 64, "shape": (16, 18, 15), "voxel_size": 8.0}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_synthetic_task_fmri(**SMALL, data_dir=tmp_path_factory.mktemp("task"))


def test_layout_like_haxby(task):
    img = nib.load(task.func[0])
    assert img.shape == (16, 18, 15, 64) and img.get_data_dtype() == np.float32
    assert img.header.get_zooms() == (8.0, 8.0, 8.0, 2.5)
    table = pd.read_csv(task.session_target[0], sep=" ")  # as the nilearn example reads it
    assert list(table.columns) == ["labels", "chunks"]
    np.testing.assert_array_equal(table["labels"], task.labels)
    # rest, block, rest, block...: every condition once per run ("chunk")
    assert table["labels"].iloc[:6].eq("rest").all() and table["labels"].iloc[6] != "rest"
    first_run = table.loc[table["chunks"] == 0, "labels"]
    assert sorted(set(first_run) - {"rest"}) == sorted(task.conditions)
    for path in (task.mask_vt[0], task.anat[0], task.mask, task.effects_img):
        assert nib.load(path).shape == (16, 18, 15)
        np.testing.assert_array_equal(nib.load(path).affine, img.affine)


def test_planted_effects(task):
    effects = np.asarray(nib.load(task.effects_img).dataobj)
    vt = np.asarray(nib.load(task.mask_vt[0]).dataobj) > 0
    brain = np.asarray(nib.load(task.mask).dataobj) > 0
    assert vt.sum() > sum((effects == k).sum() for k in (1, 2, 3, 4))  # VT is larger
    for k, inside in enumerate(task.effect_in_vt, start=1):
        region = effects == k
        assert region.sum() > 0
        assert vt[region].all() if inside else not vt[region].any()
    data = np.asarray(nib.load(task.func[0]).dataobj)
    assert (data[~brain] == 0).all() and (data[brain] > 0).all()
    # face regions respond more to faces than to houses, house regions the other way
    face, house = task.labels == "face", task.labels == "house"
    for k, condition in enumerate(task.effect_conditions, start=1):
        series = data[effects == k].mean(axis=0)
        t = sstats.ttest_ind(series[face], series[house]).statistic
        assert (t > 3) if condition == "face" else (t < -3)
    # elsewhere no voxel prefers either (beyond chance; the mean has the slow drift)
    quiet = data[brain & (effects == 0)]
    assert (sstats.ttest_ind(quiet[:, face], quiet[:, house], axis=1).pvalue < 1e-3).mean() < 0.01


def test_same_seed_same_bytes_and_reuse(task, tmp_path):
    again = make_synthetic_task_fmri(**SMALL, data_dir=tmp_path)
    with open(again.func[0], "rb") as a, open(task.func[0], "rb") as b:
        assert a.read() == b.read()
    # reused: no rewrite when the parameters are the same
    mtime = (tmp_path / "subj1" / "bold.nii.gz").stat().st_mtime_ns
    make_synthetic_task_fmri(**SMALL, data_dir=tmp_path)
    assert (tmp_path / "subj1" / "bold.nii.gz").stat().st_mtime_ns == mtime
    with pytest.raises(OutputExistsError, match="already holds a synthetic dataset"):
        make_synthetic_task_fmri(**{**SMALL, "n_timepoints": 30}, data_dir=tmp_path)
    other = make_synthetic_task_fmri(
        **{**SMALL, "n_timepoints": 30}, data_dir=tmp_path, overwrite=True
    )
    assert nib.load(other.func[0]).shape[3] == 30


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"n_timepoints": 1},
            ParameterError,
            r"n_timepoints=1 is not valid; expected an int >= 2",
        ),
        ({"shape": (16, 18)}, ParameterError, r"shape=\(16, 18\) is not valid; expected 3 ints"),
        (
            {"shape": (16, 18, 4)},
            ParameterError,
            r"shape\[2\]=4 is not valid; expected an int >= 12",
        ),
        ({"conditions": ("cat", "chair")}, ParameterError, r"including 'face' and 'house'"),
        ({"conditions": "face"}, ParameterTypeError, r"conditions='face' is not valid"),
        (
            {"noise": -1.0},
            ParameterError,
            r"noise=-1.0 is not valid; expected a finite number >= 0",
        ),
        ({"data_dir": 3}, ParameterTypeError, r"data_dir=3 has type int; expected a path"),
    ],
)
def test_bad_parameters(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        make_synthetic_task_fmri(**{**SMALL, "data_dir": tmp_path, **kwargs})
