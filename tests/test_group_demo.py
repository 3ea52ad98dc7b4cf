"""``lazyconn demo``: the command line end to end (small study, the shared cluster), vs nilearn."""

import numpy as np
import pytest

from lazyconn.cli import main
from lazyconn.exceptions import ParameterError
from lazyconn.group._demo import DENOISE, run_demo


@pytest.mark.cluster
@pytest.mark.slow
def test_demo_command_small_on_a_scheduler(tmp_path, group_client, capsys):
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.maskers import NiftiSpheresMasker

    from lazyconn.datasets import fetch_coords_power_2011

    output = tmp_path / "demo"
    address = group_client.scheduler.address
    status = main(
        [
            "demo",
            "--small",
            "--n-subjects",
            "2",
            "--output",
            str(output),
            "--scheduler",
            address,
            "--no-progress",
        ]
    )
    assert status == 0
    captured = capsys.readouterr()
    assert "done in" in captured.out and "\r" not in captured.err
    for name in (
        "group_matrix.npy",
        "subject_matrices.npy",
        "coords.npy",
        "subjects.txt",
        "report.md",
        "matrix.png",
        "connectome.png",
    ):
        assert (output / name).is_file(), name
    group = np.load(output / "group_matrix.npy")
    subjects = np.load(output / "subject_matrices.npy")
    assert subjects.shape == (2, 264, 264)
    np.testing.assert_allclose(group, subjects.mean(axis=0), atol=1e-6)
    report = (output / "report.md").read_text()
    assert "Simulated 2 subjects" in report and "| total |" in report
    assert f"the scheduler '{address}'" in report
    assert "## Compared with the planted truth" in report and "same planted region" in report
    assert (output / "subjects.txt").read_text().split() == ["sub-01", "sub-02"]

    # The first subject against nilearn on the NIfTI file the zarr store was converted from.
    func = sorted((output / "data").rglob("sub-01_*desc-preproc_bold.nii.gz"))[0]
    # nilearn's own load_confounds on the same run: the reference for lazyconn's
    confounds, sample_mask = load_confounds(str(func), **DENOISE)
    assert sample_mask is None
    coords = fetch_coords_power_2011().rois[["x", "y", "z"]].to_numpy()
    masker = NiftiSpheresMasker(
        seeds=coords,
        radius=5.0,
        smoothing_fwhm=6,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=2.0,
    )
    series = masker.fit_transform(str(func), confounds=confounds)
    expected = ConnectivityMeasure(kind="partial correlation").fit_transform([series])[0]
    np.testing.assert_allclose(subjects[0], expected, atol=1e-4)


def test_demo_options_are_validated(tmp_path, capsys):
    with pytest.raises(ParameterError, match=r"n_subjects=1 is not valid; expected an integer"):
        run_demo(tmp_path, n_subjects=1)
    with pytest.raises(ParameterError, match=r"n_workers=0 is not valid"):
        run_demo(tmp_path, n_workers=0)
    assert main(["demo", "--n-subjects", "1", "--output", str(tmp_path)]) == 1
    assert "error: --n-subjects=1 is not valid" in capsys.readouterr().err  # the flag, on the CLI


def test_demo_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--n-subjects",
        "--output",
        "--n-workers",
        "--small",
        "--scheduler",
        "--workflow",
    ):
        assert option in text


def test_demo_folders_per_size_and_workflow(monkeypatch, tmp_path):
    import lazyconn.group._demo as demo
    from lazyconn import cli

    seen = []
    monkeypatch.setattr(demo, "run", lambda args: seen.append(args) or 0)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--small"]) == 0 and main(["demo"]) == 0
    assert [a.output for a in seen] == ["lazyconn-demo-small", "lazyconn-demo"]
    assert seen[0].workflow == "connectome"
    assert cli.demo_output("regions", True) == "lazyconn-demo-regions-small"
    assert main(["demo", "-o", "x"]) == 0 and seen[-1].output == "x"


def test_demo_orders_rois_by_planted_network_and_compares_with_the_truth():
    from sklearn.utils import Bunch

    from lazyconn.group._demo import (
        UNPLANTED,
        compare_with_truth,
        planted_labels,
        planted_matrix,
        planted_order,
    )

    # Two planted regions of network "a", one of "b"; ROIs at their centres, one ROI far away.
    study = Bunch(
        region_coords=np.array([[0.0, 0, 0], [40, 0, 0], [0, 40, 0]]),
        region_networks=["a", "a", "b"],
        networks=["a", "b"],
        region_correlation=np.array([[1, 0.6, -0.3], [0.6, 1, 0], [-0.3, 0, 1]]),
    )
    coords = np.array([[0, 40, 3], [90, 90, 90], [1, 0, 0], [40, 2, 0], [-2, 0, 0]])
    region, network = planted_labels(coords, study)
    assert region.tolist() == [2, -1, 0, 1, 0]
    assert network == ["b", UNPLANTED, "a", "a", "a"]
    order, blocks = planted_order(network, study.networks)
    assert order.tolist() == [2, 3, 4, 0, 1]
    assert blocks == [("a", 0, 3), ("b", 3, 4), (UNPLANTED, 4, 5)]
    truth = planted_matrix(region, study)
    assert truth[2, 3] == 0.6 and truth[0, 2] == -0.3 and truth[2, 4] == 1 and truth[1, 2] == 0
    # the truth itself correlates perfectly with the truth; its negation at -1
    assert compare_with_truth(truth, region, study)["pearson"] == pytest.approx(1.0)
    scores = compare_with_truth(-truth, region, study)
    assert scores["pearson"] == pytest.approx(-1.0)
    assert scores["means"]["same planted region"] == (-1.0, 1)
    assert scores["means"]["anti-correlated networks (-)"] == (pytest.approx(0.3), 2)
