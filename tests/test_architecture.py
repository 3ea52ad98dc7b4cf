"""The layering of docs/architecture.md and the promises about imports hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("import-linter is a test dependency; install the [test] extra")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_lazyconn_is_cheap_and_imports_neither_distributed_nor_nilearn():
    """Nor does an estimator's package import zarr and numcodecs (~120 modules, ~6.6 MiB)
    before a store is read (a module-level import of io._dask in maskers did)."""
    code = (
        "import sys, lazyconn; "
        "bad = [m for m in ('distributed', 'nilearn', 'sklearn', 's3fs') if m in sys.modules]; "
        "import lazyconn.decomposition; "
        "bad += ['decomposition: ' + m for m in ('distributed', 'nilearn', 'zarr', 'numcodecs') "
        "if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_docs_architecture_lists_the_enforced_layers():
    import re
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    enforced = [
        " | ".join(m.strip().strip("()") for m in layer.split("|")) for layer in layers["layers"]
    ]
    doc = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", doc, re.DOTALL)
    assert block, "docs/architecture.md has no ```layers block"
    assert block.group(1).splitlines() == enforced
    assert "ignore_imports" not in layers


def test_every_module_of_a_split_package_is_in_the_layers_contract():
    """A package whose modules are listed one by one (``group``) must list each: a module
    added later and forgotten would escape the contract."""
    import re
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    named = set(re.findall(r"lazyconn[\w.]*", " ".join(layers["layers"])))
    split = {name.rsplit(".", 1)[0] for name in named if name.count(".") >= 2}
    missing = [
        f"{package}.{path.stem}"
        for package in sorted(split)
        for path in sorted((ROOT / package.replace(".", "/")).glob("*.py"))
        if path.stem != "__init__" and f"{package}.{path.stem}" not in named
    ]
    assert missing == [], f"modules missing from the import-linter layers: {missing}"


_FIT_WITHOUT_DISTRIBUTED = """
import sys, warnings
import dask, numpy as np
from lazyconn.decomposition import DictLearning
from lazyconn.maskers import NiftiMasker
runs, nii, out = sys.argv[1:3], sys.argv[3], sys.argv[4]
with warnings.catch_warnings():  # nothing set in dask's config: its default
    warnings.simplefilter("ignore", UserWarning)  # sklearn convergence
    fit = DictLearning(n_components=4, random_state=0).fit(runs)
with dask.config.set(scheduler="threads"):  # a named one
    signals = NiftiMasker(standardize="zscore_sample").fit(runs[0]).transform(runs[1])
# A .nii.gz run read in time slabs: cleaning its signals rechunks them whole in time.
from lazyconn.image import load
from lazyconn.maskers import NiftiSpheresMasker
slabs = load(nii, chunks=(*load(nii).shape[:3], 20))
spheres = NiftiSpheresMasker(SEEDS, radius=10, detrend=True).fit_transform(slabs)
# Graphs with a rechunk (dask's choice of its method imports distributed): a binary
# morphology on a chunked mask, resamplings of it (3-D) and of a chunked run (4-D).
from lazyconn._utils import LOCAL_SCHEDULER
from lazyconn.image import binary_dilation_img, load, resample_img
run = load(runs[0])
mask = binary_dilation_img(run.with_data(run.data[..., 0] > 1.0))
coarse = np.diag([12.0, 12.0, 12.0, 1.0])
with LOCAL_SCHEDULER:
    mask, mask_coarse, run_coarse = (
        np.asarray(img) for img in (
            mask, resample_img(mask, coarse, interpolation="nearest"), resample_img(run, coarse)
        )
    )
assert "distributed" not in sys.modules, "distributed was imported"
np.savez(
    out, components=fit.components_, signals=signals, mask=mask, mask_coarse=mask_coarse,
    run_coarse=run_coarse, spheres=spheres,
)
"""
#: Sphere centres inside the synthetic 8 mm studies' brain (MNI mm).
_SEEDS = [(0, -52, 18), (-46, -68, 32), (46, -68, 32)]


@pytest.mark.slow
def test_a_fit_and_a_transform_never_import_distributed(tmp_path):
    """dask's lookup imports distributed (~0.4 s) at the first compute, even for a named
    local scheduler; lazyconn finds the same scheduler without it (no Client can exist
    before distributed is imported): the results equal those of dask's own lookup."""
    pytest.importorskip("distributed")  # here: dask's lookup decides, as before
    import warnings

    from scipy import ndimage

    from lazyconn import convert
    from lazyconn.datasets import make_synthetic_fmri
    from lazyconn.decomposition import DictLearning
    from lazyconn.image import binary_dilation_img, load, resample_img
    from lazyconn.maskers import NiftiMasker, NiftiSpheresMasker

    study = make_synthetic_fmri(
        2, n_timepoints=60, resolution=8, n_networks=4, data_dir=tmp_path / "nii"
    )
    runs = [
        # several chunks: the mask's smoothed means are then made one block (a rechunk)
        str(convert(f, tmp_path / f"run{i}.zarr", chunks=(13, 15, 13, 60), progress=False))
        for i, f in enumerate(study.func)
    ]
    script = _FIT_WITHOUT_DISTRIBUTED.replace("SEEDS", repr(_SEEDS))
    code = [sys.executable, "-c", script, *runs, str(study.func[0]), str(tmp_path / "out.npz")]
    done = subprocess.run(code, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = DictLearning(n_components=4, random_state=0).fit(runs)
    signals = NiftiMasker(standardize="zscore_sample").fit(runs[0]).transform(runs[1])
    slabs = load(study.func[0], chunks=(*load(study.func[0]).shape[:3], 20))
    assert len(slabs.data.chunks[3]) == 3
    spheres = NiftiSpheresMasker(_SEEDS, radius=10, detrend=True).fit_transform(slabs)
    np.testing.assert_array_equal(got["components"], fit.components_)
    np.testing.assert_array_equal(got["spheres"], spheres)
    np.testing.assert_array_equal(got["signals"], signals)
    run = load(runs[0])
    first = np.asarray(run.data[..., 0]) > 1.0
    assert 0 < first.sum() < first.size  # a mask with edges (chunks (13, 15, 13))
    np.testing.assert_array_equal(got["mask"], ndimage.binary_dilation(first))
    coarse = np.diag([12.0, 12.0, 12.0, 1.0])
    mask_coarse = resample_img(
        binary_dilation_img(run.with_data(run.data[..., 0] > 1.0)), coarse, interpolation="nearest"
    )
    np.testing.assert_array_equal(got["mask_coarse"], np.asarray(mask_coarse))
    np.testing.assert_array_equal(got["run_coarse"], np.asarray(resample_img(run, coarse)))


def test_the_package_rechunks_only_through_utils_rechunk():
    """dask's default choice of a rechunk's method imports distributed (~0.3 s) to look for
    a Client; ``_utils.rechunk`` names it without. A ``.rechunk(...)`` call anywhere else in
    the package would bring the import back on the paths that reach it."""
    import ast

    found = []
    for path in sorted((ROOT / "lazyconn").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        allowed = set()
        if path == ROOT / "lazyconn" / "_utils.py":  # the helper's own call
            helpers = [
                n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "rechunk"
            ]
            allowed = {id(n) for helper in helpers for n in ast.walk(helper)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "rechunk"
                and id(node) not in allowed
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], f"rechunk through lazyconn._utils.rechunk: {found}"
