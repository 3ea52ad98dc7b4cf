"""The README's Python example runs as written (the front door must stay true)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.setenv("LAZYCONN_DATA", str(tmp_path))  # where make_synthetic_fmri writes
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    matrices = namespace["matrices"]
    assert matrices.shape == (4, 264, 264)
    np.testing.assert_allclose(matrices, np.swapaxes(matrices, 1, 2), atol=1e-8)
    np.testing.assert_allclose(np.diagonal(matrices, axis1=1, axis2=2), 1.0)
