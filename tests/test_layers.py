"""The layer contract of docs/architecture.md is enforced: a deliberate violation fails lint-imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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


def test_core_importing_http_breaks_the_contract(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "streamapp" / "core" / "violation.py").write_text("import streamapp.http.server  # noqa: F401\n")
    run = _lint(tree)
    assert run.returncode != 0
    assert "streamapp.core is not allowed to import streamapp.http" in run.stdout


def test_an_import_cycle_between_domains_breaks_the_contract(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "streamapp" / "tabular" / "violation.py").write_text("import streamapp.imports.job  # noqa: F401\n")
    run = _lint(tree)
    assert run.returncode != 0
    assert "streamapp.tabular is not allowed to import streamapp.imports" in run.stdout
