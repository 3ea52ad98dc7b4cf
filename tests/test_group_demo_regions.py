"""``lazyconn demo --workflow regions`` (run_demo): files, plots and a truthful report."""

import re

import nibabel as nib
import numpy as np
import pytest

from lazyconn.datasets.recovery import connectome_recovery, match_regions
from lazyconn.exceptions import ParameterError
from lazyconn.group._demo_regions import run_demo


@pytest.mark.slow
def test_regions_demo_small(tmp_path):
    out = run_demo(tmp_path / "demo", small=True, client=None, progress=False)
    folder = out["output"]
    for name in ("maps.nii.gz", "regions.nii.gz", "mean_matrix.npy", "subject_matrices.npy"):
        assert (folder / name).exists(), name
    assert out["plots"] == ["maps.png", "regions.png", "matrices.png", "connectome.png"]
    for name in out["plots"]:
        assert (folder / name).stat().st_size > 1000
    study = out["study"]
    regions = nib.load(folder / "regions.nii.gz")
    mean = np.load(folder / "mean_matrix.npy")
    assert mean.shape == (regions.shape[-1],) * 2
    np.testing.assert_allclose(np.load(folder / "subject_matrices.npy").mean(0), mean, atol=1e-6)
    # the report's figures are those of the written files against the planted truth
    match = match_regions(regions, study.labels_img)
    rec = connectome_recovery(mean, match.match, study.region_correlation)
    report = (folder / "report.md").read_text()
    assert f"**{regions.shape[-1]} regions**" in report
    assert f"mean best Dice {match.mean_dice:.2f}" in report
    assert f"r = {rec.r:.2f}" in report
    assert len(re.findall(r"^\| \w+_\d_[LR] \|", report, re.M)) == len(study.region_names)
    assert rec.r > 0.8  # the planted correlations of the matched regions are recovered


def test_regions_demo_bad_n_subjects(tmp_path):
    with pytest.raises(
        ParameterError, match=r"n_subjects=1 is not valid; expected an integer >= 2"
    ):
        run_demo(tmp_path, n_subjects=1, small=True, client=None, progress=False)


def test_cli_runs_the_regions_workflow_in_its_own_folder(monkeypatch, capsys):
    import lazyconn.group._demo_regions as demo
    from lazyconn.cli import main

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda output, **kw: seen.append((output, kw)))
    assert main(["demo", "--workflow", "regions", "--small", "--scheduler", "tcp://x:1"]) == 0
    assert main(["demo", "--workflow", "regions", "--n-subjects", "5", "--no-progress"]) == 0
    assert seen[0] == (
        "lazyconn-demo-regions-small",
        dict(n_subjects=None, small=True, n_workers=2, client="tcp://x:1", progress=True),
    )
    assert seen[1][0] == "lazyconn-demo-regions"
    assert seen[1][1]["n_subjects"] == 5 and seen[1][1]["client"] == "local"
    assert seen[1][1]["progress"] is False
