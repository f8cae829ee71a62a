"""A broker outage is the one thing that may refuse writes, and it refuses them with a 503, in bounded time.

aiokafka waits for a broker that is gone for ever, so without a deadline every write hung (measured:
no answer after 120 s). The API's writes now answer 503 with Retry-After once Kafka has not
acknowledged for ACK_DEADLINE; the worker stays up, and once the broker is back (same port and log
dir) the same writes are 202 again and nothing answered 202 before the outage is lost.

The test has a broker of its own (the session's serves every other test).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamapp.devtools import kafka_broker
from streamapp.kafka.publisher import ACK_DEADLINE
from tests.fixtures import ROOT, Worker, WorkerPool, client, eventually, free_port
from tests.mail.fixtures import Peers, peers  # noqa: F401
from tests.sending.fixtures import smtp_extra, write_templates

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECIPIENT = "/api/v1/databases/members/recipients"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    url, log_dir = f"kafka://127.0.0.1:{free_port()}", tmp_path / "broker"
    kafka_broker.start(url, log_dir, ROOT)
    yield url, log_dir
    kafka_broker.stop(log_dir)


def writes(api: httpx.Client, tag: str) -> dict[str, httpx.Response]:
    """One of each small write route, with new keys."""
    return {
        "PUT recipient": api.put(f"{RECIPIENT}/{tag}-put", json={"email": f"{tag}@example.com"}),
        "POST recipients": api.post(RECIPIENT, json=[{"originalId": f"{tag}-batch", "email": f"{tag}@example.com"}]),
        "POST history": api.post("/api/v1/databases/members/history",
                                 json=[{"originalId": f"{tag}-put", "type": "purchase", "time": "2026-11-30T10:00:00Z"}]),
        "POST message": api.post("/api/v1/triggers/news/messages", json={"originalId": f"{tag}-msg"}),
    }  # fmt: skip


def test_writes_answer_503_during_a_broker_outage_and_202_after_it(
    own_broker: tuple[str, Path],
    tmp_path: Path,
    peers: Peers,  # noqa: F811
) -> None:
    url, log_dir = own_broker
    write_templates(tmp_path)
    sink, _ = peers.streamapp_sink()
    pool = WorkerPool(url, tmp_path)
    try:
        worker = pool.create(extra=smtp_extra(sink.port))
        with client(worker) as api:
            api.timeout = httpx.Timeout(ACK_DEADLINE * 3)
            assert all(r.status_code == 202 for r in writes(api, "before").values())
            pid = kafka_broker.status(url, log_dir).pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            eventually(lambda: not kafka_broker.is_listening(*kafka_broker.parse_address(url)), timeout=30)

            started = time.monotonic()
            during = writes(api, "during")
            took = time.monotonic() - started
            for route, reply in during.items():
                assert reply.status_code == 503, (route, reply.status_code, reply.text)
                assert reply.headers["Retry-After"] == "1" and "temporarily unavailable" in reply.json()["error"]
            assert took < len(during) * (ACK_DEADLINE + 5), f"{took:.0f} s for {len(during)} writes"
            assert worker.process is not None and worker.process.poll() is None, "the worker exited"

            kafka_broker.start(url, log_dir, ROOT)
            eventually(lambda: all(r.status_code == 202 for r in writes(api, f"after-{time.monotonic_ns()}").values()),
                       timeout=120, interval=2)  # fmt: skip
            eventually(lambda: api.get(f"{RECIPIENT}/before-put").status_code == 200, timeout=60)
            assert recipient_email(worker, "before-batch") == "before@example.com"
    finally:
        pool.stop_all()


def recipient_email(worker: Worker, original_id: str) -> object:
    with client(worker) as api:
        return eventually(lambda: api.get(f"{RECIPIENT}/{original_id}").json()["email"], timeout=60)
