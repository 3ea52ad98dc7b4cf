"""Bad data says so: confounds headers that do not fit, an output folder for one run."""

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
