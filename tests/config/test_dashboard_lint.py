"""The dashboard's own rules, in the spirit of grafana/dashboard-linter (not served by the Go proxy here):
every query follows the Instance selection and the data source variable, every range function uses
Grafana's $__rate_interval, and every panel says what it shows and in which unit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.config.test_dashboard import DASHBOARD, panel_queries

RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase|deriv|delta)\(([^()]|\([^()]*\))*\[([^\]]+)\]")


def panels() -> Iterator[dict[str, Any]]:
    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from walk(item.get("panels", []))

    yield from walk(json.loads(DASHBOARD.read_text())["panels"])


QUERIES = list(panel_queries(json.loads(DASHBOARD.read_text())))
GRAPHS = [p for p in panels() if p.get("targets")]


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}:{i}" for i, (t, _) in enumerate(QUERIES)])
def test_every_query_follows_the_instance_selection(title: str, expr: str) -> None:
    selectors = re.findall(r"\b(streamapp_\w+|up)\{([^}]*)\}", expr)
    bare = re.findall(r"\b(streamapp_\w+)(?![\w{])", expr)
    assert not bare, f"{title}: {bare} without a selector"
    assert selectors and all('instance=~"$instance"' in labels for _, labels in selectors), f"{title}: {expr}"


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}:{i}" for i, (t, _) in enumerate(QUERIES)])
def test_every_range_function_uses_the_rate_interval(title: str, expr: str) -> None:
    windows = [m.group(3) for m in RANGE_FUNCTION.finditer(expr)]
    assert all(w == "$__rate_interval" for w in windows), f"{title}: windows {windows} in {expr}"


@pytest.mark.parametrize("panel", GRAPHS, ids=[p["title"] for p in GRAPHS])
def test_every_panel_has_a_description_a_unit_and_the_data_source_variable(panel: dict[str, Any]) -> None:
    assert panel.get("description"), "no description"
    assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), "no unit"
    sources = [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]
    assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), sources
