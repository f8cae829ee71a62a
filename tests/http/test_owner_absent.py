"""A keyed trigger message whose key's owner does not answer is accepted anyway, and sent once.

The worker that owns an idempotency key's partition checks and records the key
(streamapp.http.forwarding). A worker replaying its changelogs after a restart owns its
partitions but does not serve them, for as long as the replay lasts: here a worker is restarted
on an empty data dir after 200,000 upserts, so it replays them for tens of seconds. A keyed
message posted meanwhile waits OWNER_PATIENCE, then is published with the id derived from the
request (streamapp.core.ids); retries get the same id, before and after the replay, and the
ledger sends that message once.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from streamapp.http.forwarding import OWNER_PATIENCE
from tests.fixtures import TOKENS, Worker, WorkerPool, applied_commands, client, eventually, metric_value
from tests.mail.fixtures import Peers, peers  # noqa: F401
from tests.sending.fixtures import maildir_ids, smtp_extra, write_templates

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 200_000


def fill(worker: Worker) -> None:
    """ROWS recipients, applied: what a restarted worker on an empty data dir has to replay."""
    with client(worker) as api:
        for n in range(ROWS // 10_000):
            rows = [{"originalId": f"f{n}-{i}", "email": f"f{n}-{i}@example.com"} for i in range(10_000)]
            assert api.post("/api/v1/databases/members/recipients", json=rows, timeout=60).status_code == 202
    eventually(lambda: applied_commands(worker.url) >= ROWS, timeout=300, interval=1)


def listening(worker: Worker, timeout: float = 60) -> int:
    """The first /healthz status of a starting worker (its HTTP server starts before the replay)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{worker.url}/healthz", timeout=1).status_code
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"no HTTP server after {timeout} s:\n{worker.tail()}")


def unchecked(worker: Worker) -> float:
    return metric_value(worker.url, "streamapp_idempotency_unchecked_total")


def test_a_keyed_message_is_accepted_while_its_owner_replays_and_sent_once(
    kafka: str,
    tmp_path: Path,
    peers: Peers,  # noqa: F811
) -> None:
    write_templates(tmp_path)
    sink, maildir = peers.streamapp_sink()
    pool = WorkerPool(kafka, tmp_path)
    try:
        worker = pool.create(extra=smtp_extra(sink.port))
        fill(worker)
        worker.stop()
        shutil.rmtree(worker.data_dir)
        worker.start()
        assert listening(worker) == 503, "the worker was ready at once: nothing tested"

        key = f"absent-{uuid.uuid4().hex[:6]}"
        body = {"originalId": key, "email": f"{key}@example.com"}
        headers = {"Authorization": f"Bearer {TOKENS['admin']}", "Idempotency-Key": key}
        with httpx.Client(base_url=worker.url, headers=headers, timeout=60) as api:
            started = time.monotonic()
            first = api.post("/api/v1/triggers/news/messages", json=body)
            took = time.monotonic() - started
            assert first.status_code == 202, first.text
            assert took >= OWNER_PATIENCE - 1, f"answered in {took:.1f} s: the owner served it"
            message_id = first.json()["messageId"]
            retry = api.post("/api/v1/triggers/news/messages", json=body)
            assert retry.status_code == 202 and retry.json()["messageId"] == message_id, retry.text

            worker.wait_ready(300)
            assert unchecked(worker) >= 1
            after = api.post("/api/v1/triggers/news/messages", json=body)  # the owner now records the key
            assert after.status_code == 202 and after.json()["messageId"] == message_id, after.text
            replayed = api.post("/api/v1/triggers/news/messages", json=body)
            assert replayed.json()["messageId"] == message_id and replayed.headers["Idempotent-Replayed"] == "true"
            other = api.post("/api/v1/triggers/news/messages", json={**body, "properties": {"x": 1}})
            assert other.status_code == 409, other.text

        eventually(lambda: maildir_ids(maildir)[message_id] == 1, timeout=120, interval=0.5)
        time.sleep(3)
        assert maildir_ids(maildir)[message_id] == 1, "published three times, delivered more than once"
    finally:
        pool.stop_all()
