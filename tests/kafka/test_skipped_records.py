"""Rebalances under load skip no record: the regression test of the skipped-records root cause.

Faust 0.15 lets a worker's fetcher hand over records of a newly assigned partition before it has
sought that partition to its committed offset, then empties every agent's buffer once the seek is
done; the records dropped from the buffers were never processed, and Faust committed past them
(docs/architecture.md, "Why no record skips an agent"). Before the fix in
streamapp.kafka.transport, each run of this test showed records that skipped an agent.

Two sending workers share bursts of large recipient-command events and campaign messages while
one of them is killed (-9) and restarted, a backlog waiting at each rebalance; every command
must be applied, every message sent, and no agent may have seen a jump in a partition's offsets.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

from streamapp.core.keys import partition_for, recipient_key
from streamapp.core.models import UpsertRecipient
from streamapp.kafka.publisher import CommandPublisher, aiokafka_send, started_producer
from streamapp.kafka.topics import commands_topic
from streamapp.sending.enqueue import enqueue_with
from streamapp.settings import Settings
from tests.fixtures import TOKENS, Worker, WorkerPool
from tests.mail.fixtures import Peers, peers  # noqa: F401
from tests.sending.fixtures import add_recipients, maildir_ids, message, settings_of, smtp_extra, write_templates

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 12
CYCLES = 2
#: Commands per event: an agent takes tens of milliseconds per event, so a fetch of them queues up.
EVENT_ROWS = 100
#: What an agent logs when a partition's offsets jump (streamapp.agents.recipients, streamapp.sending.engine).
SKIP_LINE = re.compile(r"skipped the agent|skipped on the way in")


class Load:
    """Bursts of large command events and of campaign messages; remembers one recipient per event and every message."""

    def __init__(self, settings: Settings, tag: str, audience: list[str]) -> None:
        self.settings, self.tag, self.audience = settings, tag, audience
        self.per_event: list[str] = []  # the first recipient of each command event
        self.messages: list[str] = []
        self.calls = 0

    async def burst(self, calls: int) -> None:
        """`calls` times one event of EVENT_ROWS new recipients to every partition, and 100 messages."""
        async with started_producer(self.settings) as producer:
            publisher = CommandPublisher(aiokafka_send(producer), commands_topic(self.settings), PARTITIONS)
            for _ in range(calls):
                n, self.calls = self.calls, self.calls + 1
                ids = [f"u{self.tag}-{n}-{i}" for i in range(EVENT_ROWS * PARTITIONS * 2)]
                rows = per_partition(ids, EVENT_ROWS)
                await publisher.publish([UpsertRecipient(database="members", originalId=i, at="2026-12-01T00:00:00+00:00",
                                                         emailIfNew=f"{i}@example.com") for i in rows])  # fmt: skip
                self.per_event += [group[0] for group in grouped(rows).values()]
                sent = [message(self.settings, self.audience[(100 * n + k) % len(self.audience)]) for k in range(100)]
                await enqueue_with(producer, self.settings, sent)
                self.messages += [m.messageId for m in sent]


def grouped(ids: list[str]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for i in ids:
        groups.setdefault(partition_for(recipient_key("members", i), PARTITIONS), []).append(i)
    return groups


def per_partition(ids: list[str], rows: int) -> list[str]:
    """`rows` ids of each partition (one event each once published)."""
    groups = grouped(ids)
    assert len(groups) == PARTITIONS and all(len(g) >= rows for g in groups.values())
    return [i for group in groups.values() for i in group[:rows]]


async def churn(worker: Worker, load: Load) -> None:
    """Kill -9 and restart `worker` with a backlog waiting at each rebalance (its partitions move twice per cycle)."""
    for _ in range(CYCLES):
        worker.kill()
        await load.burst(10)  # waits for the survivor to take the dead worker's partitions over (session timeout)
        await asyncio.sleep(8)
        await load.burst(10)
        worker.start()
        await asyncio.sleep(5)
        await load.burst(10)  # a backlog again when the restarted worker joins
        await asyncio.to_thread(worker.wait_ready)


async def missing_recipients(worker: Worker, ids: list[str], patience: float) -> list[str]:
    """The ids no worker has a recipient for after `patience` seconds (writes apply asynchronously)."""
    deadline = time.monotonic() + patience
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    async with httpx.AsyncClient(base_url=worker.url, headers=headers, timeout=30) as api:
        gate = asyncio.Semaphore(16)

        async def absent(original_id: str) -> bool:
            async with gate:
                while True:
                    status = (await api.get(f"/api/v1/databases/members/recipients/{original_id}")).status_code
                    if status == 200 or time.monotonic() > deadline:
                        return status != 200
                    await asyncio.sleep(0.5)

        found = await asyncio.gather(*(absent(i) for i in ids))
    return [i for i, gone in zip(ids, found, strict=True) if gone]


def wait_delivered(maildir: Path, wanted: set[str], timeout: float) -> set[str]:
    """The wanted message ids the SMTP sink has not received once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        left = wanted - set(maildir_ids(maildir))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def skip_lines(workers: list[Worker]) -> list[str]:
    """Every skipped-offsets error any incarnation of the workers logged (a killed worker's counters are gone)."""
    lines = []
    for worker in workers:
        lines += [line for line in worker.log.read_text(errors="replace").splitlines() if SKIP_LINE.search(line)]
    return lines


def test_rebalances_under_load_skip_no_record(kafka: str, tmp_path: Path, peers: Peers) -> None:  # noqa: F811
    write_templates(tmp_path)
    sink, maildir = peers.streamapp_sink()
    pool = WorkerPool(kafka, tmp_path)
    try:
        steady = pool.create(partitions=PARTITIONS, extra=smtp_extra(sink.port))
        churned = pool.create(partitions=PARTITIONS, extra=smtp_extra(sink.port))
        tag = uuid.uuid4().hex[:6]
        audience = [f"a{tag}-{i}" for i in range(500)]
        add_recipients(steady, audience)
        load = Load(settings_of(steady), tag, audience)
        asyncio.run(churn(churned, load))
        lost = asyncio.run(missing_recipients(steady, load.per_event, patience=120))
        unsent = wait_delivered(maildir, set(load.messages), timeout=90)
        skipped = skip_lines(pool.workers)
        assert not skipped, f"{len(skipped)} skips, e.g. {skipped[:3]}; {len(lost)} upserts lost, {len(unsent)} unsent"
        assert not lost, f"{len(lost)} of {len(load.per_event)} command events never applied, e.g. {lost[:5]}"
        assert not unsent, f"{len(unsent)} of {len(load.messages)} messages never sent, e.g. {sorted(unsent)[:5]}"
    finally:
        pool.stop_all()
