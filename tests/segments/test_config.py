"""`[[segments]]` definitions checked like the rest of the configuration: every problem with its place."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from streamapp.segments.config import check_segments, config_definitions
from streamapp.segments.nodes import All, AttributeLeaf, Comparison, HistoryLeaf, SegmentLeaf
from streamapp.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]

DATABASES = """
[[databases]]
name = "members"
[databases.attributes]
score = "int"
birthday = "date"
language = "string"

[[databases]]
name = "other"
"""


def config(tmp_path: Path, segments: str) -> Path:
    path = tmp_path / "streamapp.toml"
    path.write_text(DATABASES + segments, encoding="utf-8")
    return path


def places(tmp_path: Path, segments: str) -> list[str]:
    return [f"{i.place}: {i.message}" for i in check_segments(load_settings(config(tmp_path, segments), {}))]


GOOD = """
[[segments]]
name = "vip"
database = "members"
definition = { attribute = "score", op = "gte", value = 100 }

[[segments]]
name = "birthday-buyers"
database = "members"
[segments.definition]
all = [
  { attribute = "birthday", op = "after", value = 1990-01-01 },
  { history = "purchase", within = "P30D" },
  { segment = "vip" },
]
"""


def test_good_definitions_parse_with_toml_dates(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path, GOOD), {})
    assert check_segments(settings) == []
    definitions = config_definitions(settings)
    assert set(definitions) == {"members", "other"} and definitions["other"] == {}
    assert definitions["members"]["vip"] == AttributeLeaf("score", "int", False, Comparison("gte", 100))
    both = definitions["members"]["birthday-buyers"]
    assert isinstance(both, All)
    assert both.children[0] == AttributeLeaf("birthday", "date", False, Comparison("after", date(1990, 1, 1)))
    assert isinstance(both.children[1], HistoryLeaf) and both.children[2] == SegmentLeaf("vip")


def test_every_definition_error_names_the_entry_and_the_pointer(tmp_path: Path) -> None:
    bad = """
[[segments]]
name = "ok"
database = "members"
definition = { attribute = "score", op = "gt", value = 1 }

[[segments]]
name = "broken"
database = "members"
[segments.definition]
all = [
  { attribute = "shoe_size", op = "eq", value = 1 },
  { attribute = "score", op = "starts_with", value = "1" },
  { history = "purchase", within = "P2000D" },
  { history = "purchase", within = "P1D", between = [2026-01-01, 2026-02-01] },
]

[[segments]]
name = "elsewhere"
database = "other"
definition = { segment = "ok" }
"""
    found = places(tmp_path, bad)
    assert [f.split(":")[0] for f in found] == [
        "segments[1].definition/all/0/attribute",
        "segments[1].definition/all/1/op",
        "segments[1].definition/all/2/within",
        "segments[1].definition/all/3/between",
        "segments[2].definition/segment",
    ]
    assert "unknown attribute 'shoe_size'" in found[0]
    assert found[4] == "segments[2].definition/segment: unknown segment 'ok' of this database"


def test_a_definition_that_is_no_condition_is_named_at_its_root(tmp_path: Path) -> None:
    found = places(tmp_path, '[[segments]]\nname = "x"\ndatabase = "members"\ndefinition = {}\n')
    assert len(found) == 1 and found[0].startswith("segments[0].definition: has none of the keys"), found


def test_reference_loops_are_named_once_each(tmp_path: Path) -> None:
    loops = "".join(
        f'[[segments]]\nname = "{name}"\ndatabase = "members"\ndefinition = {{ any = [{{ segment = "{target}" }}] }}\n'
        for name, target in (("a", "b"), ("b", "a"), ("self", "self"), ("reader", "a"))
    )
    assert places(tmp_path, loops) == [
        "segments[0].definition/any/0/segment: segment cycle: a -> b -> a",
        "segments[2].definition/any/0/segment: segment cycle: self -> self",
    ]
    with pytest.raises(ConfigError):
        config_definitions(load_settings(config(tmp_path, loops), {}))


def streamapp(*args: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMAPP_CONFIG": str(path), "STREAMAPP_BROKER": "kafka://127.0.0.1:1"}
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


BAD_WINDOW = '[[segments]]\nname = "x"\ndatabase = "members"\ndefinition = { history = "purchase", within = "soon" }\n'


def test_check_config_reports_definition_errors_by_place(tmp_path: Path) -> None:
    path = config(tmp_path, BAD_WINDOW)
    run = streamapp("check-config", path=path)
    assert run.returncode == 1, run.stdout
    lines = run.stderr.splitlines()
    assert lines[0].startswith(f"{path}: segments[0].definition/within: "), lines
    assert lines[-1] == f"1 error(s) in {path}"
    good = streamapp("check-config", path=config(tmp_path, GOOD))
    assert good.returncode == 0, good.stderr


def test_a_worker_refuses_to_start_on_a_bad_definition(tmp_path: Path) -> None:
    run = streamapp("worker", path=config(tmp_path, BAD_WINDOW))
    assert run.returncode == 2
    assert "config error: " in run.stderr and "segments[0].definition/within: " in run.stderr, run.stderr
