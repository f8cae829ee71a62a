"""Retention (SPEC §3): what the sweeper removes and scrubs, through the real store and in a real worker.

The decisions are pure and tested row by row; a pass runs over a real RocksDB and the broker's
changelog topics (tombstones must reach the changelog, or a restored replica brings rows back);
and a worker with `retention = "P1D"` recovers old rows from its changelogs and sweeps them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.core import clock
from streamapp.core.ids import new_batch_id, new_message_id
from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    BatchInfo,
    IdempotencyRecord,
    MessageState,
    SendMessage,
    SmtpReply,
    UpsertRecipient,
    decode_state,
    encode,
)
from streamapp.kafka.app import new_faust_app
from streamapp.kafka.store import Store
from streamapp.sending import retention
from streamapp.sending.ledger import Ledger, is_bookkeeping
from streamapp.sending.retention import (
    BatchSweep,
    Horizon,
    RetentionStores,
    Revoked,
    idempotency_changes,
    ledger_changes,
    sweep_partition,
)
from streamapp.settings import load_settings
from streamapp.tables.batches import batches_table
from streamapp.tables.idempotency import SCRUB, erased_key, idempotency_table, index_key
from streamapp.tables.messages import messages_table
from tests.fixtures import WorkerPool, config_text, eventually
from tests.kafka.changelogs import changelog_records
from tests.sending.fixtures import settings_of, smtp_extra, write_templates

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
HORIZON = Horizon(NOW, timedelta(days=1))


def ago(hours: float, now: datetime = NOW) -> str:
    return clock.iso(now - timedelta(hours=hours))


def ledger_row(message_id: str, status: str, updated: str, original_id: str = "ann", **fields: Any) -> MessageState:
    command = None
    if status in ("scheduled", "deferred"):
        command = SendMessage(messageId=message_id, database="members", originalId=original_id, priority="campaign",
                              template="news", email=f"{original_id}@example.com", enqueuedAt=updated)  # fmt: skip
    return MessageState(
        messageId=message_id, database="members", originalId=original_id, priority="campaign", status=status,  # type: ignore[arg-type]
        createdAt=fields.pop("created", updated), updatedAt=updated, command=command, **fields,
    )  # fmt: skip


def batch_info(batch_id: str, created: str, send_time: str | None = None) -> bytes:
    return encode(BatchInfo(batchId=batch_id, database="members", kind="campaign", name="newsletter",
                            priority="campaign", source="api", total=1, createdAt=created, sendTime=send_time))  # fmt: skip


def idempotency_record(original_id: str, created: str) -> bytes:
    upsert = UpsertRecipient(database="members", originalId=original_id, at=created)
    message = SendMessage(messageId=new_message_id(0), database="members", originalId=original_id,
                          priority="transactional", template="news", enqueuedAt=created)  # fmt: skip
    return encode(IdempotencyRecord(bodyHash="h", messageId=message.messageId, createdAt=created, upsert=upsert,
                                    message=message))  # fmt: skip


# -- decisions ------------------------------------------------------------------------------------


def test_final_ledger_rows_go_after_retention_and_waiting_ones_stay() -> None:
    def change(state: MessageState) -> list[tuple[bytes, bytes | None]]:
        return list(ledger_changes(state.messageId.encode(), encode(state), HORIZON, {}))

    assert change(ledger_row("a", "sent", ago(25))) == [(b"a", None)]
    assert change(ledger_row("b", "failed", ago(23))) == []
    assert change(ledger_row("c", "suppressed", ago(24 * 30))) == [(b"c", None)]
    for waiting in ("scheduled", "deferred"):  # they hold the command the schedule still sends
        assert change(ledger_row("d", waiting, ago(24 * 30))) == []


def test_an_erased_recipients_ledger_rows_keep_only_the_id_status_and_times() -> None:
    erased = {recipient_key("members", "ann"): NOW - timedelta(hours=1)}
    reply = SmtpReply(code=250, text="2.0.0 ok: queued as ann@example.com")
    sent = ledger_row("s", "sent", ago(2), lastReply=reply, attempts=1, batchId="b")
    [(key, value)] = ledger_changes(b"s", encode(sent), HORIZON, erased)
    kept = decode_state(value or b"")
    assert (key, kept.originalId, kept.lastReply, kept.reason, kept.command) == (b"s", "", None, None, None)
    assert (kept.status, kept.createdAt, kept.updatedAt, kept.attempts, kept.batchId) == (
        "sent",
        ago(2),
        ago(2),
        1,
        "b",
    )
    [(_, value)] = ledger_changes(b"w", encode(ledger_row("w", "scheduled", ago(2))), HORIZON, erased)
    cancelled = decode_state(value or b"")
    assert (cancelled.status, cancelled.reason, cancelled.command) == ("failed", "recipient erased", None)
    assert not cancelled.waiting() and cancelled.updatedAt == clock.iso(NOW)
    later = ledger_row("n", "sent", ago(0.5))  # a message made after the erase: the recipient is new again
    assert list(ledger_changes(b"n", encode(later), HORIZON, erased)) == []
    other = ledger_row("o", "sent", ago(2), original_id="bo")
    assert list(ledger_changes(b"o", encode(other), HORIZON, erased)) == []


def test_a_batch_goes_with_its_counters_after_its_creation_or_send_time() -> None:
    old, ahead, young = (new_batch_id(0, (NOW - timedelta(hours=h)).timestamp()).encode() for h in (48, 48, 1))
    elsewhere = new_batch_id(1, (NOW - timedelta(hours=48)).timestamp()).encode()
    rows = sorted([
        (old, batch_info(old.decode(), ago(48))), (old + b"/sent", b"3"),
        (ahead, batch_info(ahead.decode(), ago(48), send_time=ago(-24))), (ahead + b"/sent", b"1"),
        (young, batch_info(young.decode(), ago(1))), (young + b"/sent", b"1"),
        (elsewhere + b"/sent", b"2"),  # a counter of a batch whose BatchInfo is in another partition
        (b"\x00something-else", b"x"),
    ])  # fmt: skip
    decide = BatchSweep(HORIZON)
    deleted = {key for key, raw in rows for key, _ in decide(key, raw)}
    assert deleted == {old, old + b"/sent", elsewhere + b"/sent"}


def test_idempotency_records_and_their_bookkeeping_go_after_retention_never_within_24_hours() -> None:
    def gone(key: bytes, raw: bytes, horizon: Horizon = HORIZON) -> bool:
        return list(idempotency_changes(key, raw, horizon)) == [(key, None)]

    index = index_key(recipient_key("members", "ann"), b"digest\x1fwelcome\x1fk")
    assert gone(b"digest\x1fwelcome\x1fk", idempotency_record("ann", ago(25)))
    assert not gone(b"digest\x1fwelcome\x1fk2", idempotency_record("ann", ago(23)))
    assert gone(index, ago(25).encode()) and not gone(index, ago(23).encode())
    assert gone(erased_key(recipient_key("members", "ann")), ago(25).encode())
    assert not gone(SCRUB, ago(24 * 30).encode())  # the pass removes it once it scrubbed
    short = Horizon(NOW, timedelta(hours=1))  # (settings refuse less than 24 h; the rule holds anyway)
    assert not gone(b"digest\x1fwelcome\x1fk", idempotency_record("ann", ago(23)), short)


# -- a pass over the real store ---------------------------------------------------------------------


async def _changelog(bootstrap: str, topic: str, partition: int) -> dict[bytes, bytes | None]:
    """The last value of each key of a changelog partition (None: a tombstone)."""
    return dict(await changelog_records(bootstrap, topic, partition))


@asynccontextmanager
async def _stores(kafka: str, tmp_path: Path) -> AsyncIterator[tuple[RetentionStores, str]]:
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text(kafka, tmp_path / "data", 1, f"ret-{uuid.uuid4().hex[:8]}", partitions=2))
    app = new_faust_app(load_settings(config, environ={}))
    stores = RetentionStores(Ledger(Store(app, messages_table(app, 2))), Store(app, batches_table(app, 2)),
                             Store(app, idempotency_table(app, 2)))  # fmt: skip
    bootstrap = kafka.removeprefix("kafka://")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    tables = (stores.ledger.store, stores.batches, stores.idempotency)
    await admin.create_topics([NewTopic(s.changelog, 2, 1) for s in tables])
    await admin.close()
    await app.producer.start()
    try:
        yield stores, bootstrap
    finally:
        await app.producer.stop()


async def _pass_over_the_store(kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "SLICE_WRITES", 3)  # many slices, each resumed from its last key
    now = datetime.now(UTC)
    async with _stores(kafka, tmp_path) as (stores, bootstrap):
        ledger, store = stores.ledger, stores.ledger.store
        old = [new_message_id(1, (now - timedelta(days=3)).timestamp()) for _ in range(10)]
        young = [new_message_id(1) for _ in range(3)]
        for message_id in old:
            await ledger.put(1, ledger_row(message_id, "sent", ago(72, now)))
        for message_id in young:
            await ledger.put(1, ledger_row(message_id, "sent", ago(1, now)))
        erased_sent, erased_waiting = new_message_id(1), new_message_id(1)
        reply = SmtpReply(code=250, text="ok")
        await ledger.put(1, ledger_row(erased_sent, "sent", ago(1, now), original_id="bo", lastReply=reply))
        waiting = ledger_row(erased_waiting, "scheduled", ago(1, now), original_id="bo", batchId=new_batch_id(0))
        waiting.nextAttemptAt = ago(-24, now)
        await ledger.put(1, waiting)  # in the due index, counted as waiting and in its batch
        assert ledger.waiting(1)["campaign", "scheduled"] == 1
        await stores.idempotency.put_durably(1, erased_key(recipient_key("members", "bo")), ago(0.5, now).encode())
        await stores.idempotency.put_durably(1, SCRUB, ago(0.5, now).encode())

        swept = await sweep_partition(stores, 1, Horizon(now, timedelta(days=1)), lambda: True)
        assert swept.ledger == 12  # ten deleted, two scrubbed
        rows = [k.decode() for k, _ in store.items(1) if not is_bookkeeping(k)]
        assert sorted(rows) == sorted([*young, erased_sent, erased_waiting])
        assert decode_state(store.get(1, erased_sent.encode()) or b"").originalId == ""
        cancelled = ledger.get(1, erased_waiting)
        assert cancelled is not None and (cancelled.status, cancelled.command) == ("failed", None)
        assert not ledger.waiting(1) and not ledger.due_entries(1, b"", b"\xff", 10)  # bookkeeping too
        assert ledger.count_batch(1, str(waiting.batchId), lambda _: True) == {"failed": 1}
        assert stores.idempotency.get(1, SCRUB) is None  # scrubbed: no pass is wanted any more
        last = await _changelog(bootstrap, store.changelog, 1)
        assert all(last[m.encode()] is None for m in old)  # tombstones: a restored replica has none of them
        assert all(last[m.encode()] is not None for m in young)
        assert decode_state(last[erased_sent.encode()] or b"").lastReply is None
        assert (await _changelog(bootstrap, stores.idempotency.changelog, 1))[SCRUB] is None


@pytest.mark.integration
def test_a_pass_deletes_through_the_changelog_and_scrubs(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_pass_over_the_store(kafka, tmp_path, monkeypatch))


async def _races_and_revocation(kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "SLICE_WRITES", 2)
    now = datetime.now(UTC)
    async with _stores(kafka, tmp_path) as (stores, bootstrap):
        records = stores.idempotency
        keys = sorted(f"digest\x1fwelcome\x1fk{i}".encode() for i in range(6))
        for key in keys:
            await records.put_durably(0, key, idempotency_record("ann", ago(72, now)))
        real_write = records.write_durably
        rewritten, writes = keys[0], [0]

        async def write_while_the_owner_writes(partition: int, rows: dict[bytes, bytes | None]) -> None:
            await real_write(partition, rows)
            writes[0] += 1
            if writes[0] == 1:  # a request wrote the key again after our RocksDB delete,
                records.db(partition)[rewritten] = b"written again"  # its changelog record before our tombstone

        monkeypatch.setattr(records, "write_durably", write_while_the_owner_writes)
        with pytest.raises(Revoked):  # the partition is lost after the first slice (and its resend)
            await sweep_partition(stores, 0, Horizon(now, timedelta(days=1)), lambda: writes[0] < 2)
        last = await _changelog(bootstrap, records.changelog, 0)
        assert last[rewritten] == b"written again"  # sent again: the changelog ends as RocksDB
        assert last[keys[1]] is None
        assert all(last[k] is not None for k in keys[2:])  # left alone once the partition was lost


@pytest.mark.integration
def test_a_row_written_during_a_pass_survives_and_a_lost_partition_is_left(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_races_and_revocation(kafka, tmp_path, monkeypatch))


# -- a worker ---------------------------------------------------------------------------------------


async def _produce(bootstrap: str, rows: dict[str, list[tuple[bytes, bytes]]], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1) for topic in rows])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, records in rows.items():
            for key, value in records:
                await producer.send_and_wait(topic, value=value, key=key, partition=0)
    finally:
        await producer.stop()


@pytest.mark.integration
def test_a_worker_sweeps_what_is_older_than_its_retention(kafka: str, tmp_path: Path) -> None:
    """Rows a day and more old, in the changelogs before the worker starts: it recovers, then sweeps them."""
    write_templates(tmp_path)
    pool = WorkerPool(kafka, tmp_path)
    worker = pool.create(extra=smtp_extra(1), service='retention = "P1D"', start=False)
    settings = settings_of(worker)
    now = datetime.now(UTC)
    old_id, waiting_id, young_id = (new_message_id(0, (now - timedelta(hours=h)).timestamp()) for h in (50, 50, 1))
    old_batch, young_batch = (new_batch_id(0, (now - timedelta(hours=h)).timestamp()) for h in (50, 1))
    key, fresh_key = b"digest\x1fwelcome\x1fold", b"digest\x1fwelcome\x1fnew"
    ann = recipient_key("members", "ann")
    waiting = ledger_row(waiting_id, "scheduled", ago(50, now))
    waiting.command.notBefore = waiting.nextAttemptAt = ago(-24 * 30, now)  # type: ignore[union-attr]
    prefix = settings.service.id
    rows = {
        f"{prefix}-messages-changelog": [
            (old_id.encode(), encode(ledger_row(old_id, "sent", ago(50, now)))),
            (waiting_id.encode(), encode(waiting)),
            (young_id.encode(), encode(ledger_row(young_id, "sent", ago(1, now)))),
        ],
        f"{prefix}-batches-changelog": [
            (old_batch.encode(), batch_info(old_batch, ago(50, now))), (old_batch.encode() + b"/sent", b"1"),
            (young_batch.encode(), batch_info(young_batch, ago(1, now))),
        ],
        f"{prefix}-idempotency-changelog": [
            (index_key(ann, key), ago(50, now).encode()), (key, idempotency_record("ann", ago(50, now))),
            (index_key(ann, fresh_key), ago(1, now).encode()), (fresh_key, idempotency_record("ann", ago(1, now))),
        ],
    }  # fmt: skip
    bootstrap = kafka.removeprefix("kafka://")
    asyncio.run(_produce(bootstrap, rows, settings.service.partitions))
    worker.start().wait_ready()
    try:
        gone = {old_id.encode(), old_batch.encode(), old_batch.encode() + b"/sent", key, index_key(ann, key)}
        kept = {waiting_id.encode(), young_id.encode(), young_batch.encode(), fresh_key, index_key(ann, fresh_key)}

        def swept() -> bool:
            last: dict[bytes, bytes | None] = {}
            for topic in rows:
                last.update(asyncio.run(_changelog(bootstrap, topic, 0)))
            assert all(last[k] is None for k in gone), "not swept yet"
            return all(last[k] is not None for k in kept)

        assert eventually(swept, timeout=60, interval=1)
    finally:
        pool.stop_all()
