"""A row larger than SPEC §3 allows is skipped and counted; the worker never stops because of it.

Before the limits, two large upserts of one recipient merged into a row the changelog could not take
(Kafka's 1 MB record limit): the changelog write failed, the worker crashed, and the command, replayed
after the restart, crashed it again, for ever.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from streamapp.core.models import AppendHistory, HistoryRecord, RecipientCommand, UpsertRecipient
from streamapp.kafka.publisher import CommandPublisher, aiokafka_send, started_producer
from streamapp.kafka.topics import commands_topic
from streamapp.settings import load_settings
from tests.fixtures import Worker, WorkerPool, client, eventually, get_when, metric_value

pytestmark = pytest.mark.integration

AT = "2026-12-01T00:00:00.000+00:00"
BIG = "/api/v1/databases/other/recipients/big"
#: A value that must never show up in the log (only prefixes of values may).
VALUE = "Z" * (60 * 1024)


def commands_total(worker: Worker, outcome: str) -> float:
    return metric_value(worker.url, "streamapp_recipient_commands_total", outcome=outcome)


async def publish_raw(worker: Worker, commands: list[RecipientCommand]) -> None:
    """Straight to the commands topic, as a client bypassing the door (or a bug) would."""
    settings = load_settings(worker.config, environ={})
    async with started_producer(settings) as producer:
        publisher = CommandPublisher(aiokafka_send(producer), commands_topic(settings), settings.service.partitions)
        await publisher.publish(commands)


def healthy(worker: Worker) -> None:
    assert worker.process is not None and worker.process.poll() is None, worker.tail()
    assert httpx.get(f"{worker.url}/healthz", timeout=5).status_code == 200


def test_an_oversized_row_is_skipped_counted_and_never_crashes_the_worker(workers: WorkerPool) -> None:
    worker = workers.create(partitions=2)
    with client(worker) as api:
        # Through the door: each PUT (two 60 KiB attributes) is fine; the fifth would make a 600 KiB row.
        for i in range(5):
            response = api.put(BIG, json={"attributes": {f"a{i}": VALUE, f"b{i}": VALUE}})
            assert response.status_code == 202, response.text
        eventually(lambda: commands_total(worker, "oversize") >= 1, timeout=60)
        kept = get_when(worker, BIG)["attributes"]
        assert sorted(kept) == sorted(f"{k}{i}" for i in range(4) for k in "ab")
        # Bypassing the door: the crash (two 700 KB upserts merging into 1.4 MB), and a huge history record.
        raw: list[RecipientCommand] = [
            UpsertRecipient(database="other", originalId="raw", at=AT, attributes={"x": "R" * 700_000}),
            UpsertRecipient(database="other", originalId="raw", at=AT, attributes={"y": "R" * 700_000}),
            AppendHistory(
                database="other",
                originalId="big",
                records=[HistoryRecord(id="h1", type="purchase", time=AT, fields={"custom1": "H" * 600_000})],
            ),
        ]
        asyncio.run(publish_raw(worker, raw))
        eventually(lambda: commands_total(worker, "oversize") >= 4, timeout=60)
        healthy(worker)
        # Later writes are applied: to another recipient, and to the same one, smaller.
        assert api.put("/api/v1/databases/other/recipients/next", json={"attributes": {"n": "1"}}).status_code == 202
        assert api.put(BIG, json={"attributes": {"a0": "small"}}).status_code == 202
        get_when(worker, "/api/v1/databases/other/recipients/next")
        get_when(worker, BIG, lambda r: r["attributes"]["a0"] == "small")
        assert api.get("/api/v1/databases/other/recipients/raw").status_code == 404
    # kill -9 before the offsets may be committed: the oversized commands may be replayed, and skipped again.
    worker.kill()
    worker.start().wait_ready()
    get_when(worker, BIG, lambda r: r["attributes"]["a0"] == "small", timeout=90)
    time.sleep(5)  # a crash loop would have ended the process by now
    healthy(worker)
    log = worker.log.read_text(errors="replace")
    assert "changelog write" not in log and "Z" * 200 not in log and "R" * 200 not in log
