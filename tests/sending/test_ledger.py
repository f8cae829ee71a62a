"""The ledger's bookkeeping (streamapp.sending.ledger): per-batch counters, the due index, waiting counts.

A real `messages` Store (RocksDB) and its real changelog topic on the broker. The counters must
equal a full scan of the batch's rows after sends, failures, retries and a cancel, count a status
written twice once, and reach the changelog in the order RocksDB saw them (a replica restored from
it has the same counts), with many writes in flight at once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.core import clock
from streamapp.core.ids import batch_message_id, new_batch_id
from streamapp.core.models import MessageState, SendMessage, encode
from streamapp.kafka.app import new_faust_app
from streamapp.kafka.store import Store
from streamapp.sending.ledger import COMPLETE, DUE, WAITING, Ledger, counts_key, due_of
from streamapp.settings import load_settings
from streamapp.tables.messages import messages_table
from tests.fixtures import config_text
from tests.kafka.changelogs import changelog_records

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
EVERYONE = lambda database: True  # noqa: E731


@asynccontextmanager
async def started_ledger(kafka: str, tmp_path: Path) -> AsyncIterator[tuple[Ledger, str]]:
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text(kafka, tmp_path / "data", 1, f"ledger-{uuid.uuid4().hex[:8]}", partitions=2))
    app = new_faust_app(load_settings(config, environ={}))
    store = Store(app, messages_table(app, 2))
    bootstrap = kafka.removeprefix("kafka://")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(store.changelog, 2, 1)])
    await admin.close()
    await app.producer.start()
    try:
        yield Ledger(store), bootstrap
    finally:
        await app.producer.stop()


async def changelog(bootstrap: str, topic: str, partition: int) -> dict[bytes, bytes | None]:
    """The partition's rows as a replica restores them: the last record of each key."""
    last = dict(await changelog_records(bootstrap, topic, partition))
    return {k: v for k, v in last.items() if v is not None}


def state(message_id: str, batch_id: str, status: str, at: datetime = NOW, pad: int = 0) -> MessageState:
    waiting = status in ("scheduled", "deferred")
    command = SendMessage(
        messageId=message_id, database="members", originalId=message_id, priority="campaign", template="news",
        enqueuedAt=clock.iso(NOW), batchId=batch_id, properties={"pad": "x" * pad},
    )  # fmt: skip
    return MessageState(
        messageId=message_id, database="members", originalId=message_id, priority="campaign",
        status=status, createdAt=clock.iso(NOW), updatedAt=clock.iso(at),  # type: ignore[arg-type]
        nextAttemptAt=clock.iso(at) if waiting else None, batchId=batch_id, command=command if waiting else None,
    )  # fmt: skip


async def _counts_follow_every_transition(kafka: str, tmp_path: Path) -> None:
    async with started_ledger(kafka, tmp_path) as (ledger, bootstrap):
        batch = new_batch_id(0)
        ids = [batch_message_id(1, batch, row) for row in range(400)]
        rng = random.Random(7)
        first = {m: rng.choice(["scheduled", "sent", "failed", "deferred", "suppressed"]) for m in ids}
        # All at once: 400 writes in flight, 2 KB each, over several record batches of the changelog.
        await asyncio.gather(
            *(ledger.put(1, state(m, batch, s, NOW + timedelta(hours=2), pad=2000)) for m, s in first.items())
        )
        waiting = [m for m, s in first.items() if s in ("scheduled", "deferred")]
        retried, cancelled = waiting[: len(waiting) // 2], waiting[len(waiting) // 2 :]
        await asyncio.gather(*(ledger.put(1, state(m, batch, "sent")) for m in retried))
        await asyncio.gather(*(ledger.put(1, state(m, batch, "failed")) for m in cancelled))  # a cancel
        for m in ids[:50]:  # replays: the same row written again counts once
            await ledger.put(1, ledger.get(1, m))  # type: ignore[arg-type]
        expected = Counter({"sent": 0, "failed": 0, "suppressed": 0})
        expected.update(ledger.get(1, m).status for m in ids)  # type: ignore[union-attr]
        assert ledger.count_batch(1, batch, EVERYONE) == ledger.scan_batch(1, batch, EVERYONE) == +expected
        assert sum(ledger.count_batch(1, batch, EVERYONE).values()) == 400
        assert ledger.count_batch(1, batch, lambda database: database != "members") == Counter()
        assert ledger.count_batch(0, batch, EVERYONE) == Counter()  # the other partition has none of them
        assert ledger.waiting(1) == Counter() and ledger.due_entries(1, DUE, b"~e", 10) == []

        replica = await changelog(bootstrap, ledger.store.changelog, 1)
        local = dict(ledger.store.items(1))
        assert replica == local, "the changelog must end as RocksDB does"


def test_batch_counters_equal_a_scan_after_sends_failures_retries_and_a_cancel(kafka: str, tmp_path: Path) -> None:
    asyncio.run(_counts_follow_every_transition(kafka, tmp_path))


async def _due_index(kafka: str, tmp_path: Path) -> None:
    async with started_ledger(kafka, tmp_path) as (ledger, _):
        batch = new_batch_id(0)
        ids = [batch_message_id(0, batch, row) for row in range(5)]
        for n, m in enumerate(ids):
            await ledger.put(0, state(m, batch, "scheduled", NOW + timedelta(minutes=10 - n)))
        entries = ledger.due_entries(0, DUE, b"~e", 100)
        assert [due_of(k)[1] for k, _ in entries] == ids[::-1]  # in due order
        assert due_of(entries[0][0])[0] == (NOW + timedelta(minutes=6)).timestamp()
        assert ledger.waiting(0) == Counter({("campaign", "scheduled"): 5})
        await ledger.put(0, state(ids[0], batch, "deferred", NOW + timedelta(minutes=1)))  # moved earlier
        await ledger.put(0, state(ids[1], batch, "sent"))
        assert [due_of(k)[1] for k, _ in ledger.due_entries(0, DUE, b"~e", 100)] == [ids[0], ids[4], ids[3], ids[2]]
        assert ledger.waiting(0) == Counter({("campaign", "scheduled"): 3, ("campaign", "deferred"): 1})
        assert ledger.count_batch(0, batch, EVERYONE) == Counter({"scheduled": 3, "deferred": 1, "sent": 1})


def test_the_due_index_holds_exactly_the_waiting_rows_in_due_order(kafka: str, tmp_path: Path) -> None:
    asyncio.run(_due_index(kafka, tmp_path))


async def _prepare_rebuilds(kafka: str, tmp_path: Path) -> None:
    async with started_ledger(kafka, tmp_path) as (ledger, _):
        batch = new_batch_id(1)
        store = ledger.store
        statuses = ["sent", "scheduled", "failed", "deferred", "sent"]
        for row, status in enumerate(statuses):  # rows of a ledger written before its bookkeeping
            message_id = batch_message_id(1, batch, row)
            await store.put_durably(1, message_id.encode(), encode(state(message_id, batch, status)))
        await store.put_durably(1, counts_key("0001" + "0" * 20), b"stale")
        await store.put_durably(1, b"~i", b"1")  # complete as the ledger was before `~w` had statuses
        await store.put_durably(1, WAITING, encode({"campaign": 2}))
        assert store.get(1, counts_key(batch)) is None
        assert await ledger.prepare(1) == 5
        assert ledger.count_batch(1, batch, EVERYONE) == ledger.scan_batch(1, batch, EVERYONE)
        assert ledger.waiting(1) == Counter({("campaign", "scheduled"): 1, ("campaign", "deferred"): 1})
        assert len(ledger.due_entries(1, DUE, b"~e", 10)) == 2
        assert store.get(1, counts_key("0001" + "0" * 20)) is None and store.get(1, COMPLETE) == b"1"
        assert store.get(1, b"~i") is None
        assert await ledger.prepare(1) == 0  # once
        assert await ledger.prepare(0) == 0 and store.get(0, WAITING) is not None  # empty: marked at once


def test_a_ledger_older_than_its_bookkeeping_is_rebuilt_once(kafka: str, tmp_path: Path) -> None:
    asyncio.run(_prepare_rebuilds(kafka, tmp_path))
