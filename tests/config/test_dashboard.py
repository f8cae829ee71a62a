"""The Grafana dashboard and the alert rules against a real Prometheus scraping a real worker under load.

Grafana itself has no package here; what it would do is what this test does: substitute the
dashboard's variables into every panel query, and ask Prometheus. A query that errors, or that
returns no series after an import, API writes, a campaign and a transactional message, is a
panel that would be empty or broken in Grafana. Prometheus also loads the shipped rule file, and
every rule must evaluate (`health: ok`).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamapp.core import clock
from tests.config.test_prometheus_rules import RULES, prometheus_tools  # noqa: F401
from tests.fixtures import ROOT, Worker, WorkerPool, client, eventually, free_port, metric_value
from tests.imports.fixtures import drop, wait_report
from tests.mail.fixtures import Peers, peers  # noqa: F401
from tests.sending.fixtures import maildir_ids, smtp_extra, write_templates
from tests.test_worker import IMPORT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "streamapp.json"
#: Queries that may rightly have no series after this load, and why.
ALLOWED_EMPTY = {
    # drawn only for the routes that answered a 5xx; the load has none (the /healthz 503s before the
    # worker was ready are left out of every ratio)
    "5xx error ratio": "by (route)",
}
#: $__rate_interval: a window that holds the whole load (Grafana picks one from the time range).
RATE_INTERVAL = "2m"


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, query) of every target of every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                if target.get("expr"):
                    yield inner.get("title", "?"), target["expr"]


def substituted(expr: str, instance: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$instance", instance)


class Prometheus:
    """A real Prometheus scraping `targets` every second, with the shipped alert rules."""

    def __init__(self, binary: Path, base: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        scrape = {"job_name": "streamapp", "scrape_interval": "1s", "scrape_timeout": "900ms"}
        settings = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [scrape | {"static_configs": [{"targets": targets}]}],
        }
        config = base / "prometheus.yml"
        config.write_text(json.dumps(settings))  # JSON is YAML
        self.log = base / "prometheus.log"
        command = [
            str(binary), f"--config.file={config}", f"--storage.tsdb.path={base / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        try:
            eventually(self.ready, timeout=60)
        except BaseException:
            self.stop()
            raise

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            return False

    def query(self, expr: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


#: A segment whose members leave on their own 5 s after a visit: members, changes and a timer flip to watch.
SEGMENT = """
[[segments]]
name = "visited"
database = "members"
definition = { history = "visit", within = "PT5S" }
"""


def load(worker: Worker, maildir: Path) -> None:
    """What an ops team would watch: an import, API writes and reads, a campaign, a transactional message,
    segment members entering and leaving by themselves."""
    drop(worker, "members/crm", "dash.csv", b"CustomerNo;Email\nD1;d1@example.com\nD2;bad\n")
    wait_report(worker, "dash.csv")
    with client(worker) as api:
        for i in range(40):  # over 4 s: rate() needs increases between scrapes, not a series born at its total
            upsert = api.put(f"/api/v1/databases/members/recipients/R{i}", json={"email": f"r{i}@example.com"})
            assert upsert.status_code == 202, upsert.text
            api.get("/api/v1/databases/members/recipients/nobody")  # a 404
            time.sleep(0.1)
        rows = "originalId,email\n" + "".join(f"C{i},c{i}@example.com\n" for i in range(50))
        sent = api.post("/api/v1/campaigns/newsletter/sends", content=rows, headers={"Content-Type": "text/csv"})
        assert sent.status_code == 202, sent.text
        message = api.post("/api/v1/triggers/news/messages", json={"originalId": "T1", "email": "t1@example.com"})
        assert message.status_code == 202, message.text
    eventually(lambda: len(maildir_ids(maildir)) >= 51, timeout=120, interval=0.5)
    with client(worker) as api:  # visitors enter the segment, and leave it 5 s later with no new event
        visits = [{"originalId": f"R{i}", "type": "visit", "time": clock.iso(datetime.now(UTC))} for i in range(5)]
        assert api.post("/api/v1/databases/members/history", json=visits).status_code == 202

        def members() -> int | None:
            count: int | None = api.get("/api/v1/databases/members/segments/visited").json()["count"]
            return count

        eventually(lambda: members() == 5, timeout=5, interval=0.2)
        eventually(lambda: members() == 0, timeout=30, interval=0.5)


def worker_503s(worker: Worker) -> float:
    return metric_value(worker.url, "streamapp_http_requests_total", route="/healthz", code="503")


def test_every_panel_has_data_every_rule_evaluates_and_the_scrape_lints_clean(
    tmp_path: Path,
    prometheus_tools: Path,  # noqa: F811
    peers: Peers,  # noqa: F811
    kafka: str,
) -> None:
    write_templates(tmp_path)
    sink, maildir = peers.streamapp_sink()
    pool = WorkerPool(kafka, tmp_path)
    prometheus = None
    try:
        worker = pool.create(extra=smtp_extra(sink.port) + IMPORT + SEGMENT)
        target = worker.url.removeprefix("http://")
        prometheus = Prometheus(prometheus_tools / "prometheus", tmp_path, [target])
        assert worker_503s(worker) > 0, "no /healthz 503 before ready: the exclusion is not tested"
        load(worker, maildir)
        time.sleep(5)  # a few scrapes after the load

        failures = []
        for title, expr in panel_queries(json.loads(DASHBOARD.read_text())):
            answer = prometheus.query(substituted(expr, f"{target}|.*"))
            if answer.get("status") != "success":
                failures.append(f"{title}: {expr} -> {answer.get('error')}")
            elif not answer["data"]["result"] and ALLOWED_EMPTY.get(title, "\0") not in expr:
                failures.append(f"{title}: {expr} -> no series")
            elif title == "HTTP 5xx ratio":  # the 503s of /healthz while the worker started do not count
                assert float(answer["data"]["result"][0]["value"][1]) == 0, answer
        assert not failures, "panels without data:\n" + "\n".join(failures)

        scrape = httpx.get(f"{worker.url}/metrics", timeout=10).text
        linted = subprocess.run(
            [str(prometheus_tools / "promtool"), "check", "metrics"], input=scrape, capture_output=True, text=True
        )
        assert linted.returncode == 0 and not (linted.stdout + linted.stderr).strip(), linted.stdout + linted.stderr

        rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        unhealthy = [(r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r["health"] != "ok"]
        assert rules and not unhealthy, unhealthy
    finally:
        if prometheus is not None:
            prometheus.stop()
        pool.stop_all()
