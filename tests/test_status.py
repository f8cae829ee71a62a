"""`streamapp status` against a real group of two workers: members, partitions, readiness, queues, imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import Worker, WorkerPool, config_text, eventually, free_port
from tests.imports.fixtures import drop, wait_report
from tests.sending.fixtures import smtp_extra, write_templates
from tests.test_worker import IMPORT

pytestmark = pytest.mark.integration


def status(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMAPP_CONFIG": str(worker.config)}
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "status", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_status_shows_each_worker_its_partitions_queues_and_the_last_import(workers: WorkerPool) -> None:
    write_templates(workers.base)
    extra = smtp_extra(free_port()) + IMPORT
    first, second = workers.create(extra=extra), workers.create(extra=extra)
    drop(first, "members/crm", "status.csv", b"CustomerNo;Email\nST1;st1@example.com\nST2;bad\n")
    wait_report(first, "status.csv")

    def both_ready() -> dict[str, object] | None:
        run = status(first, "--json")
        assert run.returncode == 0, run.stderr
        found = json.loads(run.stdout)
        urls = {w["url"] for w in found["workers"] if w["ready"]}
        return found if found["state"] == "Stable" and urls == {first.url, second.url} else None

    found = eventually(both_ready, timeout=60)
    commands = next(t for t in found["lag"] if t.endswith("-recipient-commands"))
    owned = [set(w["partitions"].get(commands, [])) for w in found["workers"]]
    assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == {0, 1, 2, 3}
    assert all(set(w["queue_depth"]) == {"transactional", "batch", "campaign"} for w in found["workers"])
    assert found["imports"][0] | {"finishedAt": None} == {
        "file": "status.csv", "import": "crm", "outcome": "processed", "applied": 1, "rejected": 1, "finishedAt": None
    }  # fmt: skip

    text = status(first).stdout
    assert f"{first.url}  ready" in text and f"{second.url}  ready" in text
    assert "status.csv  processed  1 applied, 1 rejected" in text


def test_status_names_the_broker_it_cannot_reach(tmp_path: Path) -> None:
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text(f"127.0.0.1:{free_port()}", tmp_path / "data", free_port(), "nobody"))
    env = {**os.environ, "STREAMAPP_CONFIG": str(config)}
    run = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "cannot read the group from 127.0.0.1:" in run.stderr
