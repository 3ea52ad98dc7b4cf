"""``lazyconn demo``: the command line end to end (small study, the shared cluster), vs nilearn."""

import numpy as np
import pandas as pd
import pytest

from lazyconn.cli import main
from lazyconn.exceptions import ParameterError
from lazyconn.group._demo import CONFOUND_COLUMNS, run_demo


@pytest.mark.cluster
@pytest.mark.slow
def test_demo_command_small_on_a_scheduler(tmp_path, group_client, capsys):
    from nilearn.connectome import ConnectivityMeasure
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
    assert "done in" in capsys.readouterr().out
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

    # The first subject against nilearn on the NIfTI file the zarr store was converted from.
    func = sorted((output / "data").rglob("sub-01_*desc-preproc_bold.nii.gz"))[0]
    conf = sorted((output / "data").rglob("sub-01_*confounds_timeseries.tsv"))[0]
    table = pd.read_csv(conf, sep="\t", na_values="n/a")[CONFOUND_COLUMNS].bfill(limit=1)
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
    series = masker.fit_transform(str(func), confounds=table.to_numpy())
    expected = ConnectivityMeasure(kind="partial correlation").fit_transform([series])[0]
    np.testing.assert_allclose(subjects[0], expected, atol=1e-4)


def test_demo_options_are_validated(tmp_path):

    with pytest.raises(ParameterError, match=r"n_subjects=1 is not valid; expected an integer"):
        run_demo(tmp_path, n_subjects=1)
    with pytest.raises(ParameterError, match=r"n_workers=0 is not valid"):
        run_demo(tmp_path, n_workers=0)
    assert main(["demo", "--n-subjects", "1", "--output", str(tmp_path)]) == 1


def test_demo_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--n-subjects", "--output", "--n-workers", "--small", "--scheduler"):
        assert option in text
