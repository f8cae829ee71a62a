"""The layer contract of docs/architecture.md is enforced: a deliberate violation fails lint-imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(tmp: Path) -> Path:
    """The package as installed (the agents/ and tables/ symlinks followed) and the contract."""
    shutil.copytree(ROOT / "streamapp", tmp / "streamapp", symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, env={"PYTHONPATH": str(tree)}
    )


def test_the_tree_keeps_its_layers(tmp_path: Path) -> None:
    run = _lint(_copy_tree(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("package", "imported", "message"),
    [
        ("core", "streamapp.http.server", "streamapp.core is not allowed to import streamapp.http"),
        ("tabular", "streamapp.imports.job", "streamapp.tabular is not allowed to import streamapp.imports"),
        ("sending", "streamapp.runtime", "streamapp.sending is not allowed to import streamapp.runtime"),
    ],
)
def test_an_import_against_the_layers_breaks_the_contract(
    tmp_path: Path, package: str, imported: str, message: str
) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "streamapp" / package / "violation.py").write_text(f"import {imported}  # noqa: F401\n")
    run = _lint(tree)
    assert run.returncode != 0
    assert message in run.stdout


def test_a_cycle_inside_a_package_breaks_the_contract(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "streamapp" / "kafka" / "violation.py").write_text("import streamapp.kafka.store  # noqa: F401\n")
    store = tree / "streamapp" / "kafka" / "store.py"
    store.write_text(store.read_text() + "\nimport streamapp.kafka.violation  # noqa: E402, F401\n")
    run = _lint(tree)
    assert run.returncode != 0
    assert "No import cycles" in run.stdout and "BROKEN" in run.stdout
