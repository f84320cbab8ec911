"""The package's import contract (pyproject.toml, import-linter): layers and no circles.

The contract is checked on the real tree, and shown to catch what it exists for: an import circle
and an upward import injected into a copy of the package each break it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contract_holds():
    proc = lint(REPO / "src", REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 kept, 0 broken" in proc.stdout


@pytest.fixture(scope="module")
def copy_of_package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(
        REPO / "src" / "mmvi", root / "src" / "mmvi", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a circle inside one package, hidden in a function as the old ones were
        (
            "models/units.py",
            "def _circle():\n    from mmvi.models import mrbm  # noqa\n",
            "No import circles",
        ),
        # the maths importing the run layer
        ("objectives/base.py", "def _upward():\n    from mmvi import lifecycle  # noqa\n", "Layers"),
        # a module below the public API importing it
        ("train.py", "def _api():\n    import mmvi.api  # noqa\n", "Layers"),
    ],
)
def test_the_contract_catches_a_circle_or_an_upward_import(copy_of_package, module, line, broken):
    path = copy_of_package / "src" / "mmvi" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n\n" + line)
        proc = lint(copy_of_package / "src", copy_of_package)
    finally:
        path.write_text(original)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and broken in proc.stdout.split("Broken contracts")[-1], proc.stdout[
        -3000:
    ]


def test_every_module_is_in_a_layer():
    """A module the layers do not name would be free to import anything: each one is in a layer."""
    import pkgutil
    import tomllib

    import mmvi

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    named = [m.strip() for layer in layers for m in layer.split("|")]
    modules = [m.name for m in pkgutil.walk_packages(mmvi.__path__, "mmvi.")]
    free = [m for m in modules if not any(m == n or m.startswith(n + ".") for n in named)]
    # a package whose modules sit in different layers (mmvi.deep) is exempt if its __init__ imports nothing
    split = [m for m in free if (REPO / "src" / m.replace(".", "/") / "__init__.py").is_file()]
    for package in split:
        source = (REPO / "src" / package.replace(".", "/") / "__init__.py").read_text()
        assert "import " not in source, f"{package}/__init__.py imports, but its package is in no layer"
    assert not set(free) - set(split), (
        f"modules in no layer of the import contract: {sorted(set(free) - set(split))}"
    )
