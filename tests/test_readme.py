"""Every Python block of the README runs as written, in order, as one script would (the front
door must stay true), and gives the planted answer."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _planted_partial(correlation):
    precision = np.linalg.inv(correlation)
    d = np.sqrt(np.diag(precision))
    partial = -precision / np.outer(d, d)
    np.fill_diagonal(partial, 1.0)
    return partial


@pytest.mark.cluster
@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) >= 2, "README lost a python example"
    assert any('if __name__ == "__main__":' in b for b in blocks)  # the guard is shown
    monkeypatch.setenv("LAZYCONN_DATA", str(tmp_path))  # where make_synthetic_fmri writes
    monkeypatch.chdir(tmp_path)  # the scripts write relative paths (cache/)
    namespace = {"__name__": "__main__"}  # run as a script: the main guard is true
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    matrices = namespace["matrices"]
    assert matrices.shape == (4, 264, 264)
    np.testing.assert_allclose(matrices, np.swapaxes(matrices, 1, 2), atol=1e-8)
    np.testing.assert_allclose(np.diagonal(matrices, axis1=1, axis2=2), 1.0)

    group, study = namespace["group"], namespace["study"]
    assert group.subjects_ == ["sub-01", "sub-02", "sub-03", "sub-04"] and not group.failed_
    assert (tmp_path / "cache").is_dir()
    # the planted regions' partial correlations are recovered
    iu = np.triu_indices(len(study.region_names), k=1)
    truth = _planted_partial(study.region_correlation)[iu]
    assert np.corrcoef(group.group_matrix_[iu], truth)[0, 1] > 0.7
