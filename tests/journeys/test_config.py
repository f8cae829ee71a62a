"""`[[journeys]]` checked like the rest of the configuration: each file read, every problem named by file and path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamapp.journeys.config import MAX_FILE_BYTES, check_journeys, config_journeys
from streamapp.journeys.nodes import HistoryTrigger, If, SegmentTrigger, Send
from streamapp.settings import ConfigError, load_settings
from tests.journeys.common import example

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[service]
timezone = "Europe/Stockholm"

[[databases]]
name = "members"
[databases.attributes]
coupon_sent = "bool"
birthday = "date"

[[segments]]
name = "vip"
database = "members"
definition = { attribute = "coupon_sent", op = "eq", value = true }
"""
TEMPLATES = ("welcome", "nudge", "tips", "thanks", "coupon")


def setup(tmp_path: Path, journeys: str, files: dict[str, Any]) -> Path:
    """A config folder with templates, journey files (a dict is written as JSON, a str as is) and the TOML."""
    for name in TEMPLATES:
        folder = tmp_path / "templates" / name
        folder.mkdir(parents=True)
        (folder / "subject.txt").write_text("Hi", encoding="utf-8")
        (folder / "body.html").write_text("<p>Hi</p>", encoding="utf-8")
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    config = tmp_path / "streamapp.toml"
    config.write_text(BASE + journeys, encoding="utf-8")
    return config


def issues(config: Path) -> list[str]:
    return [str(issue) for issue in check_journeys(load_settings(config, {}))]


ONE = '\n[[journeys]]\nname = "welcome"\nfile = "journeys/welcome.json"\n'


def test_a_good_journey_file_parses_relative_to_the_config_folder(tmp_path: Path) -> None:
    config = setup(tmp_path, ONE, {"journeys/welcome.json": example()})
    settings = load_settings(config, {})
    assert settings.journeys[0].file == tmp_path / "journeys" / "welcome.json"
    assert check_journeys(settings) == []
    parsed = config_journeys(settings)["welcome"]
    assert parsed.name == "welcome" and parsed.entries == (HistoryTrigger("signup", parsed.entries[0].leaf),)  # type: ignore[union-attr]


def test_journeys_use_configured_segments(tmp_path: Path) -> None:
    raw = example(entry={"segment": "vip", "on": "enter"})
    raw["steps"][2]["if"] = {"segment": "vip"}
    config = setup(tmp_path, ONE, {"journeys/welcome.json": raw})
    parsed = config_journeys(load_settings(config, {}))["welcome"]
    assert parsed.entries == (SegmentTrigger("vip", True),)
    assert isinstance(parsed.steps[2].action, If)


def test_errors_inside_a_file_name_the_file_and_the_json_path(tmp_path: Path) -> None:
    raw = example()
    raw["steps"][5]["timeout"] = "P3"
    raw["steps"][9]["send"]["template"] = "missing"
    raw["steps"][7]["update"]["attributes"]["colour"] = "red"
    config = setup(tmp_path, ONE, {"journeys/welcome.json": raw})
    file = tmp_path / "journeys" / "welcome.json"
    found = issues(config)
    assert [line.split(": ")[1] for line in found] == [
        "/steps/5/timeout",
        "/steps/7/update/attributes/colour",
        "/steps/9/send/template",
    ]
    assert all(line.startswith(f"{file}: ") for line in found)
    with pytest.raises(ConfigError):
        config_journeys(load_settings(config, {}))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ('{"database": "members",', "is not JSON: Expecting"),
        ("\xff", None),
        ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    ],
    ids=["missing", "not-json", "not-utf8", "deep"],
)
def test_an_unusable_file_names_the_toml_entry(tmp_path: Path, content: str | None, message: str | None) -> None:
    config = setup(tmp_path, ONE, {} if content is None else {"journeys/welcome.json": content})
    if content == "\xff":
        (tmp_path / "journeys" / "welcome.json").write_bytes(b"\xff\xfe{")
    found = issues(config)
    assert len(found) == 1 and found[0].startswith(f"{config}: journeys[0].file: journey file "), found
    assert message is None or message in found[0]


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    config = setup(tmp_path, ONE, {"journeys/welcome.json": " " * (MAX_FILE_BYTES + 1)})
    assert "larger than" in issues(config)[0]


def test_a_file_that_is_no_object_is_named_at_its_root(tmp_path: Path) -> None:
    config = setup(tmp_path, ONE, {"journeys/welcome.json": "[]"})
    file = tmp_path / "journeys" / "welcome.json"
    assert issues(config) == [f"{file}: /: a journey must be a JSON object with database, entry and steps"]


def test_the_toml_entry_itself_is_checked(tmp_path: Path) -> None:
    entries = ONE + ONE + '\n[[journeys]]\nname = "a b"\n\n[[journeys]]\nname = "x"\nfile = "j.json"\ncolour = 1\n'
    config = setup(tmp_path, entries, {"journeys/welcome.json": example(), "j.json": example()})
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    found = [f"{i.place}: {i.message}" for i in caught.value.issues]
    assert found == [
        "journeys[1].name: journey 'welcome' is defined twice",
        "journeys[2].name: must match [A-Za-z0-9_-]{1,64}",
        "journeys[2].file: required key is missing",
        "journeys[3].colour: unknown key",
    ]


def streamapp(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMAPP_CONFIG": str(config)}
    command = [sys.executable, "-m", "streamapp.cli", "check-config"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_check_config_reports_journey_errors_and_fails(tmp_path: Path) -> None:
    raw = example()
    raw["steps"][5]["timeout"] = "soon"
    config = setup(tmp_path, ONE, {"journeys/welcome.json": raw})
    run = streamapp(config)
    assert run.returncode == 1
    file = tmp_path / "journeys" / "welcome.json"
    assert run.stderr.splitlines()[0].startswith(f"{file}: /steps/5/timeout: 'soon' is not an ISO 8601 duration")


def test_the_shipped_config_and_its_welcome_journey_pass_check_config() -> None:
    run = streamapp(ROOT / "config" / "streamapp.toml")
    assert run.returncode == 0, run.stderr
    assert "1 journey(s)" in run.stdout
    welcome = config_journeys(load_settings(ROOT / "config" / "streamapp.toml", {}))["welcome"]
    assert welcome.entries[0] == HistoryTrigger("signup", welcome.entries[0].leaf)  # type: ignore[union-attr]
    assert welcome.quiet_hours is None
    sends = [step.action.template for step in welcome.steps if isinstance(step.action, Send)]
    assert sends == ["welcome", "welcome-tips", "welcome-reminder"]
    assert any(isinstance(step.action, If) for step in welcome.steps)
