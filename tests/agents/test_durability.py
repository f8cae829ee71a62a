"""Nothing that got a 202 is lost: kill -9 of the worker, then of the broker, then restart."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamapp.devtools import kafka_broker
from tests.fixtures import ROOT, WorkerPool, client, eventually, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A broker of this test's own, so killing it does not disturb the other tests."""
    url = f"kafka://127.0.0.1:{free_port()}"
    data_dir = tmp_path / "broker"
    kafka_broker.start(url, data_dir, ROOT)
    yield url, data_dir
    kafka_broker.stop(data_dir)


def snapshot(api: httpx.Client, ids: list[str]) -> dict[str, dict[str, object]]:
    found = {}
    for i in ids:
        response = api.get(f"/api/v1/databases/members/recipients/{i}")
        assert response.status_code == 200, (i, response.status_code, response.text)
        found[i] = response.json()
    return found


def test_kill9_worker_and_broker_loses_nothing(own_broker: tuple[str, Path], tmp_path: Path) -> None:
    url, broker_dir = own_broker
    pool = WorkerPool(url, tmp_path)
    worker = pool.create(partitions=4)
    ids = [f"k{uuid.uuid4().hex[:6]}-{i}" for i in range(300)]
    try:
        with client(worker) as api:
            for i in ids[:100]:  # single upserts, each acknowledged with 202
                assert (
                    api.put(
                        f"/api/v1/databases/members/recipients/{i}",
                        json={"email": f"{i}@example.com", "attributes": {"score": 1}},
                    ).status_code
                    == 202
                )
            rows = [{"originalId": i, "attributes": {"firstname": i}} for i in ids[100:]]
            assert api.post("/api/v1/databases/members/recipients", json=rows).status_code == 202
            for i in ids[:50]:  # partial updates on top
                assert (
                    api.put(f"/api/v1/databases/members/recipients/{i}", json={"attributes": {"score": 2}}).status_code
                    == 202
                )
        # Kill the worker before it can have committed or flushed everything.
        worker.kill()
        worker.start().wait_ready()
        with client(worker) as api:
            before = eventually(lambda: _complete(api, ids), timeout=90)
        # Now the broker: kill -9, restart it on the same log, restart the worker.
        pid = kafka_broker.status(url, broker_dir).pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        worker.kill()
        kafka_broker.start(url, broker_dir, ROOT)
        worker.start().wait_ready()
        with client(worker) as api:
            after = eventually(lambda: _complete(api, ids), timeout=90)
        assert after == before
        for i in ids[:50]:
            assert after[i]["attributes"] == {"score": 2} and after[i]["email"] == f"{i}@example.com"
        for i in ids[50:100]:
            assert after[i]["attributes"] == {"score": 1}
        for i in ids[100:]:
            assert after[i]["attributes"] == {"firstname": i}
    finally:
        pool.stop_all()


def _complete(api: httpx.Client, ids: list[str]) -> dict[str, dict[str, object]]:
    """Every recipient readable with its last update applied (raises AssertionError until then)."""
    found = snapshot(api, ids)
    stale = [i for i in ids[:50] if found[i]["attributes"] != {"score": 2}]
    assert not stale, f"{len(stale)} updates not applied, e.g. {found[stale[0]]}"
    return found
