"""The layering of docs/architecture.md and the promises about imports hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("import-linter is a test dependency; install the [test] extra")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_lazyconn_is_cheap_and_imports_neither_distributed_nor_nilearn():
    code = (
        "import sys, lazyconn; "
        "bad = [m for m in ('distributed', 'nilearn', 'sklearn', 's3fs') if m in sys.modules]; "
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
