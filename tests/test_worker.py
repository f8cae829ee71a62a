"""A worker's series known at start-up (SPEC §7): exported at 0 before the first event, with readiness and build."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import streamapp
from tests.fixtures import WorkerPool, free_port
from tests.sending.fixtures import smtp_extra, write_templates

pytestmark = pytest.mark.integration

IMPORT = """
[[imports]]
name = "crm"
database = "members"
watch = "members/crm"
identity = "CustomerNo"
[imports.columns]
Email = "email"
"""


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_a_fresh_worker_exports_every_known_series_at_zero(workers: WorkerPool, tmp_path: Path) -> None:
    write_templates(workers.base)
    worker = workers.create(extra=smtp_extra(free_port()) + IMPORT)
    found = samples(worker.url)  # before any request but /healthz

    assert value(found, "streamapp_ready") == 1.0
    assert value(found, "streamapp_build_info", version=streamapp.__version__) == 1.0
    for outcome in ("accepted", "rejected"):
        for source in ("api", "file:crm"):
            assert value(found, "streamapp_ingest_rows_total", database="members", source=source, outcome=outcome) == 0
        assert value(found, "streamapp_ingest_rows_total", database="other", source="api", outcome=outcome) == 0
    for outcome in ("processed", "rejected", "duplicate"):
        assert value(found, "streamapp_files_total", **{"import": "crm", "outcome": outcome}) == 0
    for priority in ("transactional", "batch", "campaign"):
        for outcome in ("sent", "deferred", "failed", "suppressed", "scheduled"):
            assert value(found, "streamapp_messages_total", priority=priority, outcome=outcome) == 0
    for reply_class in ("2xx", "4xx", "5xx", "connection_error"):
        assert value(found, "streamapp_smtp_replies_total", **{"class": reply_class}) == 0


def test_requests_are_counted_by_method_and_invented_methods_share_one_label(workers: WorkerPool) -> None:
    worker = workers.create()
    httpx.request("PROPFIND", f"{worker.url}/healthz", timeout=5)  # a method llhttp parses, no route takes
    httpx.get(f"{worker.url}/healthz", timeout=5)
    found = samples(worker.url)
    methods = {dict(labels)["method"] for name, labels in found if name == "streamapp_http_requests_total"}
    assert "GET" in methods and "other" in methods and "PROPFIND" not in methods
