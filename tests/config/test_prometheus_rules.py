"""The shipped Prometheus configuration and alert rules (SPEC §7), checked by promtool.

promtool comes from Debian's package, unpacked into `.cache/prometheus/` by
`deploy/prometheus/install.sh` (run once per session when it is missing), so
these tests need no Prometheus on the machine. Besides promtool's own checks:
every alert rule has a `for`, a severity, a summary, a description and a
runbook, and the unit-test file has a firing and a silent case for it, so a
rule added without tests fails here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "prometheus" / "install.sh"
BIN = Path(os.environ.get("PROMETHEUS_CACHE", ROOT / ".cache" / "prometheus")) / "bin"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus.yml"
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "tests" / "alerts_test.yml"
ALERTMANAGER_CONFIG = ROOT / "config" / "prometheus" / "alertmanager.yml"

SEVERITIES = {"critical", "warning"}


def _tool(name: str) -> Path:
    return BIN / name


@pytest.fixture(scope="session")
def prometheus_tools() -> Path:
    """The folder of promtool and amtool, installed from Debian's packages on first use."""
    if not all(os.access(_tool(name), os.X_OK) for name in ("promtool", "amtool")):
        done = subprocess.run(["bash", str(INSTALL)], cwd=ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{INSTALL.relative_to(ROOT)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return BIN


def _run(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _assert_ok(done: subprocess.CompletedProcess[str]) -> None:
    command = " ".join([Path(done.args[0]).name, *done.args[1:]])
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stdout}{done.stderr}"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alert_rules() -> Iterator[dict[str, Any]]:
    for group in _load(RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


def _rule_tests() -> Iterator[dict[str, Any]]:
    for test in _load(RULE_TESTS)["tests"]:
        yield from test.get("alert_rule_test") or []


# -- promtool -----------------------------------------------------------------


def test_prometheus_config_is_valid(prometheus_tools: Path) -> None:
    """`promtool check config` also loads every rule file it lists (relative to the config's folder)."""
    done = _run(prometheus_tools / "promtool", "check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))
    _assert_ok(done)
    assert "1 rule files found" in done.stdout, done.stdout


def test_alert_rules_are_valid(prometheus_tools: Path) -> None:
    _assert_ok(_run(prometheus_tools / "promtool", "check", "rules", str(RULES.relative_to(ROOT))))


def test_alert_rule_unit_tests_pass(prometheus_tools: Path) -> None:
    _assert_ok(_run(prometheus_tools / "promtool", "test", "rules", str(RULE_TESTS.relative_to(ROOT))))


def test_alertmanager_config_is_valid(prometheus_tools: Path) -> None:
    _assert_ok(_run(prometheus_tools / "amtool", "check-config", str(ALERTMANAGER_CONFIG.relative_to(ROOT))))


# -- conventions --------------------------------------------------------------


def test_prometheus_config_loads_the_shipped_rules_and_alertmanager() -> None:
    config = _load(PROMETHEUS_CONFIG)
    rule_files = [(PROMETHEUS_CONFIG.parent / name).resolve() for name in config["rule_files"]]
    assert rule_files == [RULES], "rule_files are resolved against the config's folder"
    targets = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    assert next(job["job_name"] for job in config["scrape_configs"]) == "streamapp"


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in _alert_rules()]
    assert names, f"no alert rule in {RULES}"
    assert len(names) == len(set(names)), sorted(names)


@pytest.mark.parametrize("rule", list(_alert_rules()), ids=lambda rule: rule["alert"])
def test_alert_rule_is_documented(rule: dict[str, Any]) -> None:
    """Every rule says how long (`for`), how bad (severity) and what to do (summary, description, runbook)."""
    assert "for" in rule, f"{rule['alert']}: no `for` (write `for: 0m` for an alert that fires at once)"
    assert (rule.get("labels") or {}).get("severity") in SEVERITIES, f"{rule['alert']}: severity not in {SEVERITIES}"
    annotations = rule.get("annotations") or {}
    for key in ("summary", "description"):
        assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key} annotation"
    assert str(annotations.get("runbook") or annotations.get("runbook_url") or "").strip(), (
        f"{rule['alert']}: no runbook annotation"
    )
    assert 'job="streamapp"' in rule["expr"], f'{rule["alert"]}: select job="streamapp" (docs/operations.md §3)'
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert rule["alert"] in doc, f"{rule['alert']}: no runbook entry in docs/operations.md"


@pytest.mark.parametrize("rule", list(_alert_rules()), ids=lambda rule: rule["alert"])
def test_alert_rule_has_firing_and_silent_cases(rule: dict[str, Any]) -> None:
    """A rule without a unit test that names it, firing and silent, fails here."""
    cases = [case for case in _rule_tests() if case.get("alertname") == rule["alert"]]
    assert cases, f"{rule['alert']}: no alert_rule_test names it in {RULE_TESTS.relative_to(ROOT)}"
    assert any(case.get("exp_alerts") for case in cases), f"{rule['alert']}: no case where it fires"
    assert any(not case.get("exp_alerts") for case in cases), f"{rule['alert']}: no case where it stays silent"


def test_rule_tests_name_only_existing_alerts() -> None:
    names = {str(rule["alert"]) for rule in _alert_rules()}
    unknown = {str(case.get("alertname")) for case in _rule_tests()} - names
    assert not unknown, f"alert_rule_test names alerts that {RULES.name} does not define: {sorted(unknown)}"
