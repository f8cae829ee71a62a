"""Retention (SPEC §3) and the ledger side of erasure: each worker sweeps the partitions it owns.

Removed `[service] retention` (default P90D) after:

- a ledger row's last update, once it is final (sent, failed, suppressed): a row that may still be
  sent (scheduled, deferred) holds its command and stays, whatever its age; a batch's counts in the
  ledger's bookkeeping as streamapp.sending.ledger says (`counts_expired`), the rest of it stays;
- a batch's creation or send time, whichever is later: its BatchInfo and every other row of its
  `batches` partition whose key starts with the batch id (its counters, `BatchSweep`); rows named
  by a batch id whose BatchInfo is in another partition go `retention` after the id was made;
- an idempotency record's creation (never sooner than its 24 hours, SPEC §4), and the index rows
  and erasure marks of the idempotency table (streamapp.tables.idempotency).

Scrubbed: the ledger rows of a recipient erased in the partition (its mark in the idempotency
table) that were made before the erase keep the message id, status and times, and what names no
one (database, priority, attempts, batch id); one still waiting to be sent is `failed`, reason
`recipient erased`. A row the pipeline writes for the recipient after a pass (a message in flight
at the erase) is scrubbed by the next pass.

A pass over a partition runs soon after it is assigned, every SWEEP_INTERVAL, and within seconds of
an erase (the table's SCRUB row). It reads in slices of at most SLICE_SECONDS, each with a fresh
iterator from the last key read, and leaves the partition as soon as this worker no longer owns it
(its RocksDB may be closed between slices): it never holds the event loop for long. Writes go
durably: RocksDB and the changelog, a tombstone for each delete, acknowledged, so a replica
restored from the changelog does not bring rows back. The ledger's go through the engine's Ledger
(its ordered writer, and `put` for a scrub, so the batch counts and due index follow the new
status); the other tables' through Store.write_durably, and a row its owner wrote again between
the sweep's RocksDB write and the acknowledgement is sent again afterwards, so the changelog ends
as RocksDB does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from mode import Service

from streamapp.core import clock
from streamapp.core.ids import batch_time
from streamapp.core.keys import recipient_key
from streamapp.core.models import FINAL_STATUSES, WAITING_STATUSES, MessageState, decode_state, encode
from streamapp.kafka.app import KafkaApp
from streamapp.kafka.store import Store
from streamapp.kafka.topics import commands_topic
from streamapp.sending.idempotency import KEY_LIFETIME
from streamapp.sending.ledger import Ledger, counts_expired, is_bookkeeping
from streamapp.settings import Settings
from streamapp.tables.idempotency import BOOKKEEPING, ERASED, INDEX, SCRUB, erased_recipient

log = logging.getLogger(__name__)

#: A partition's regular pass; the first comes START_DELAY after it is assigned (tables recovered).
SWEEP_INTERVAL = 3600.0
START_DELAY = 5.0
#: How often the owned partitions are looked at (one read of SCRUB each), and the least time
#: between two passes over a partition that an erase asked for.
TICK_SECONDS = 1.0
SCRUB_GAP = 5.0
#: One slice: rows read for at most this long, or this many rows to write, then the loop is free.
SLICE_SECONDS = 0.02
SLICE_WRITES = 500
PAUSE_SECONDS = 0.005
ERASED_REASON = "recipient erased"
#: A batch id's length (streamapp.core.ids): the prefix of every `batches` row of the batch.
BATCH_ID_BYTES = 24

#: A row's changes: (key, new value or None to delete); empty keeps it.
Changes = Iterable[tuple[bytes, bytes | None]]
Decide = Callable[[bytes, bytes], Changes]
_KEEP: Changes = ()


class Revoked(Exception):
    """The partition is no longer this worker's (or the worker stops): the pass is left."""


@dataclass(frozen=True, slots=True)
class RetentionStores:
    """The tables swept; the ledger is the send engine's own, so scrubbed rows keep its bookkeeping
    (batch counts, due index) right and its writes stay in order with the engine's."""

    ledger: Ledger
    batches: Store
    idempotency: Store


@dataclass(frozen=True, slots=True)
class Horizon:
    """What is old at `now`: made (or last updated) more than `retention` (or `at_least`) ago."""

    now: datetime
    retention: timedelta

    def expired(self, at: datetime, at_least: timedelta = timedelta(0)) -> bool:
        return at + max(self.retention, at_least) < self.now


@dataclass(slots=True)
class Swept:
    """Rows deleted or scrubbed in one pass, per table."""

    ledger: int = 0
    batches: int = 0
    idempotency: int = 0

    def __bool__(self) -> bool:
        return bool(self.ledger or self.batches or self.idempotency)


# -- what goes: pure decisions, row by row ------------------------------------------------------


class _LedgerRow(msgspec.Struct):
    database: str
    originalId: str
    status: str
    createdAt: str
    updatedAt: str


class _BatchTimes(msgspec.Struct):
    createdAt: str
    sendTime: str | None = None


class _RecordTime(msgspec.Struct):
    createdAt: str


_ledger_row = msgspec.msgpack.Decoder(_LedgerRow)
_batch_times = msgspec.msgpack.Decoder(_BatchTimes)
_record_time = msgspec.msgpack.Decoder(_RecordTime)


def ledger_changes(key: bytes, raw: bytes, horizon: Horizon, erased: Mapping[bytes, datetime]) -> Changes:
    """Scrub a row of an erased recipient made before the erase; delete a final row not updated for `retention`."""
    if is_bookkeeping(key):  # the ledger's counters and due index (streamapp.sending.ledger)
        return ((key, None),) if counts_expired(key, raw, horizon.expired) else _KEEP
    row = _ledger_row.decode(raw)
    erased_at = erased.get(recipient_key(row.database, row.originalId)) if erased else None
    if erased_at is not None and clock.parse_time(row.createdAt) <= erased_at:
        return ((key, encode(scrubbed(decode_state(raw), horizon.now))),)
    if row.status in FINAL_STATUSES and horizon.expired(clock.parse_time(row.updatedAt)):
        return ((key, None),)
    return _KEEP


def scrubbed(state: MessageState, now: datetime) -> MessageState:
    """The row as an erased recipient's is kept: no address, reply, reason or command (SPEC §3)."""
    waiting = state.status in WAITING_STATUSES
    return MessageState(
        messageId=state.messageId, database=state.database, originalId="", priority=state.priority,
        status="failed" if waiting else state.status, attempts=state.attempts,
        reason=ERASED_REASON if waiting else None, createdAt=state.createdAt,
        updatedAt=clock.iso(now) if waiting else state.updatedAt, batchId=state.batchId,
    )  # fmt: skip


@dataclass(slots=True)
class BatchSweep:
    """Decides the rows of a `batches` partition, read in key order: a batch's BatchInfo (keyed by its
    id) sorts before its other rows (keys that start with the id), which share its fate."""

    horizon: Horizon
    batch: bytes = b""
    expired: bool = False

    def __call__(self, key: bytes, raw: bytes) -> Changes:
        batch = key[:BATCH_ID_BYTES]
        if batch != self.batch:
            self.batch, self.expired = batch, False  # kept if its first row cannot be read
            self.expired = self._expired(batch, key, raw)
        return ((key, None),) if self.expired else _KEEP

    def _expired(self, batch: bytes, key: bytes, raw: bytes) -> bool:
        made = batch_time(batch.decode("ascii", errors="replace"))
        if made is None:  # not a batch's row: not ours to remove
            return False
        if key != batch:  # its BatchInfo is in another partition: the id says when it was made
            return self.horizon.expired(datetime.fromtimestamp(made, UTC))
        times = _batch_times.decode(raw)
        latest = max(clock.parse_time(t) for t in (times.createdAt, times.sendTime) if t is not None)
        return self.horizon.expired(latest)


def idempotency_changes(key: bytes, raw: bytes, horizon: Horizon) -> Changes:
    """Records and index rows go `retention` (at least 24 h) after the record was made; erasure marks
    `retention` after the erase; the SCRUB row is the pass's own business."""
    if key.startswith(INDEX):
        made, at_least = clock.parse_time(raw.decode()), KEY_LIFETIME
    elif key.startswith(ERASED):
        made, at_least = clock.parse_time(raw.decode()), timedelta(0)
    elif key.startswith(BOOKKEEPING):
        return _KEEP
    else:
        made, at_least = clock.parse_time(_record_time.decode(raw).createdAt), KEY_LIFETIME
    return ((key, None),) if horizon.expired(made, at_least) else _KEEP


# -- one pass over one partition, in slices -------------------------------------------------------


async def sweep_partition(
    stores: RetentionStores, partition: int, horizon: Horizon, owned: Callable[[], bool]
) -> Swept:
    """One pass over a partition's ledger, batches and idempotency rows; Revoked when it is lost."""
    idempotency, ledger = stores.idempotency, stores.ledger
    scrub = idempotency.get(partition, SCRUB)
    erased = {erased_recipient(k): clock.parse_time(v.decode()) for k, v in idempotency.items(partition, ERASED)}

    async def write_ledger(rows: dict[bytes, bytes | None]) -> None:
        deletes = {key: value for key, value in rows.items() if value is None}
        if deletes:  # in order with the engine's writes; a removed row is not uncounted (sending.ledger)
            await ledger.writer.write(partition, deletes)
        for value in rows.values():
            if value is not None and owned():  # a scrub: put, so the bookkeeping follows the new status
                await ledger.put(partition, decode_state(value))

    def writer(store: Store) -> Write:
        return lambda rows: _write(store, partition, rows, owned)

    swept = Swept()
    decide_ledger: Decide = lambda k, v: ledger_changes(k, v, horizon, erased)  # noqa: E731
    swept.ledger = await _sweep(ledger.store, partition, decide_ledger, owned, write_ledger)
    swept.batches = await _sweep(stores.batches, partition, BatchSweep(horizon), owned, writer(stores.batches))
    decide_idempotency: Decide = lambda k, v: idempotency_changes(k, v, horizon)  # noqa: E731
    swept.idempotency = await _sweep(idempotency, partition, decide_idempotency, owned, writer(idempotency))
    if scrub is not None and owned() and idempotency.get(partition, SCRUB) == scrub:  # no erase since the start
        await _write(idempotency, partition, {SCRUB: None}, owned)
    return swept


Write = Callable[[dict[bytes, bytes | None]], Awaitable[None]]


async def _sweep(store: Store, partition: int, decide: Decide, owned: Callable[[], bool], write: Write) -> int:
    start: bytes | None = None
    changed = 0
    while True:
        if not owned():
            raise Revoked(f"{store.name}[{partition}]")
        rows, start, done = _slice(store, partition, start, decide)
        if rows:
            await write(rows)
            changed += len(rows)
        if done:
            return changed
        await asyncio.sleep(PAUSE_SECONDS)


def _slice(
    store: Store, partition: int, start: bytes | None, decide: Decide
) -> tuple[dict[bytes, bytes | None], bytes | None, bool]:
    """(changes, last key read, whether the partition is done) of the rows after `start`."""
    deadline = time.monotonic() + SLICE_SECONDS
    rows: dict[bytes, bytes | None] = {}
    last = start
    for key, raw in store.items(partition, start=start):
        if key == start:
            continue
        last = key
        try:
            rows.update(decide(key, raw))
        except (msgspec.DecodeError, ValueError) as exc:  # kept: it is not ours to judge
            log.warning("%s[%d]: row %r left alone: %s", store.name, partition, key[:80], exc)
        if len(rows) >= SLICE_WRITES or time.monotonic() > deadline:
            return rows, last, False
    return rows, last, True


async def _write(store: Store, partition: int, rows: dict[bytes, bytes | None], owned: Callable[[], bool]) -> None:
    """Write durably, then send again what the owner wrote in between (the changelog ends as RocksDB)."""
    await store.write_durably(partition, rows)
    if not owned():
        return
    again = {key: store.get(partition, key) for key in rows}
    again = {key: value for key, value in again.items() if value != rows[key]}
    if again:
        await store.write_durably(partition, again)


# -- the service ----------------------------------------------------------------------------------


class RetentionSweeper(Service):  # type: ignore[misc]
    """Passes over this worker's partitions (the recipient-commands topic's: every table is
    co-partitioned with it), one at a time."""

    def __init__(self, settings: Settings, kafka: KafkaApp, stores: RetentionStores, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka = kafka
        self.stores = stores
        self.retention = settings.service.retention
        self.topic = commands_topic(settings)
        self.due: dict[int, float] = {}  # partition -> monotonic time of its next regular pass
        self.last: dict[int, float] = {}  # partition -> monotonic time its last pass started

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(TICK_SECONDS)
            if self._stopping() or not self.kafka.is_ready():
                continue  # the app closes its tables on the way out: none may be opened again
            try:
                for partition in self._wanted():
                    await self._pass(partition)
            except Exception:
                if not self._stopping():
                    log.exception("retention sweep tick failed")

    def _stopping(self) -> bool:
        return bool(self.should_stop or self.kafka.should_stop)

    def _wanted(self) -> list[int]:
        """Owned partitions whose pass is due, or that an erase asked for."""
        owned, now = self.kafka.assigned(self.topic), time.monotonic()
        for gone in self.due.keys() - owned:
            del self.due[gone]
            self.last.pop(gone, None)
        for new in owned - self.due.keys():
            self.due[new] = now + START_DELAY
        return sorted(p for p in owned if self.due[p] <= now or self._scrub_wanted(p, now))

    def _scrub_wanted(self, partition: int, now: float) -> bool:
        recent = now - self.last.get(partition, float("-inf")) < SCRUB_GAP
        return not recent and self._owns(partition) and self.stores.idempotency.get(partition, SCRUB) is not None

    def _owns(self, partition: int) -> bool:
        return not self._stopping() and self.kafka.is_ready() and partition in self.kafka.assigned(self.topic)

    async def _pass(self, partition: int) -> None:
        self.due[partition] = time.monotonic() + SWEEP_INTERVAL
        self.last[partition] = time.monotonic()
        horizon = Horizon(datetime.now(UTC), self.retention)
        try:
            swept = await sweep_partition(self.stores, partition, horizon, lambda: self._owns(partition))
        except Revoked as exc:
            log.info("retention pass left %s: no longer owned", exc)
            return
        except Exception:
            if self._owns(partition):
                log.exception("retention pass over partition %d failed; the next one tries again", partition)
            return
        if swept:
            log.info(
                "partition %d: %d ledger, %d batch and %d idempotency rows removed or scrubbed",
                partition, swept.ledger, swept.batches, swept.idempotency,
            )  # fmt: skip
