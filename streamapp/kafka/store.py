"""Every RocksDB access of the worker: one `Store` per Faust table, one `PartitionTransaction` per event.

Why not Faust's own `table[key] = value`: it costs about 70 µs per key (a FutureMessage, a
PendingMessage, sensor calls and a produce future per key), which caps a worker near 14,000
rows/s. A transaction here writes a chunk of rows with one RocksDB `WriteBatch` and a few
aiokafka produce batches, while the changelog keeps one record per key, so log compaction,
recovery and standby replicas work exactly as for Faust's own writes (the shape is quix-streams'
`PartitionTransaction`).

Guarantees, the same as Faust's at-least-once tables:
- rows are written to the partition's RocksDB at once (reads see them);
- changelog batches are queued in aiokafka's accumulator, which Faust flushes before it commits
  the source offsets, so no source offset is committed before the changelog records of the rows
  it produced;
- the store's persisted changelog offset advances when a batch is acked (recovery replays from
  there); a failed changelog send crashes the worker rather than committing past lost state;
- a value the changelog could not take (MAX_CHANGELOG_RECORD) is refused with RecordTooLarge when it
  is staged or put, before RocksDB is written: sending it would fail, crash the worker, and the command
  replayed after the restart would crash it again, for ever.

This module and the rest of `streamapp.kafka` are the only places that touch faust-streaming's
RocksDB store internals (`_db_for_partition`, `set_persisted_offset`) and the producer's
aiokafka client (`_ensure_producer`): faust-streaming is pinned to 0.15.x for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import faust
from faust.types import TP
from rocksdict import WriteBatch

log = logging.getLogger(__name__)

_MISSING = object()
#: Faust's own bookkeeping rows (persisted offsets) share the key space of every table.
FAUST_KEYS = b"__faust"
_crashes: set[asyncio.Task[Any]] = set()  # keeps crash tasks referenced until done
#: The largest key + value of one changelog record. Kafka's default `max.message.bytes` is 1 MiB for a
#: whole record batch and Faust's producer sends requests of at most 1,000,000 bytes; 900 KiB leaves room
#: for the batch and record headers. The doors and the agent keep rows far smaller (512 KiB, SPEC §3):
#: this is the last line of defence.
MAX_CHANGELOG_RECORD = 900 * 1024


class RecordTooLarge(ValueError):
    """A value too large for the changelog, refused before anything was written: the caller skips it."""

    def __init__(self, table: str, key: bytes, size: int) -> None:
        super().__init__(
            f"{table}: {size} bytes for key {key[:80]!r}, more than a changelog record takes ({MAX_CHANGELOG_RECORD})"
        )
        self.table = table
        self.key = key
        self.size = size


def check_record(table: str, key: bytes, value: bytes | None) -> None:
    """Raise RecordTooLarge for a record the changelog could not take (a delete always fits)."""
    if value is not None and len(key) + len(value) > MAX_CHANGELOG_RECORD:
        raise RecordTooLarge(table, key, len(key) + len(value))


def write_rows(db: Any, rows: Mapping[bytes, bytes | None]) -> None:
    """Write `rows` to a partition's RocksDB in one WriteBatch (None deletes)."""
    batch = WriteBatch(raw_mode=True)
    for key, value in rows.items():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    db.write(batch)


def aiokafka_producer(app: faust.App) -> Any:
    """The aiokafka producer under Faust's (for produce batches and per-record acks)."""
    return app.producer._ensure_producer()


class Store:
    """One RocksDB-backed Faust table: its partitions' databases and its changelog topic."""

    def __init__(self, app: faust.App, table: Any) -> None:
        self.app = app
        self.table = table
        self.name: str = table.name

    @property
    def changelog(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def db(self, partition: int) -> Any:
        """The rocksdict database of one partition this worker holds (raw bytes keys and values)."""
        return self.table.data._db_for_partition(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self.db(partition).get(key)
        return value

    def items(self, partition: int, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Stored rows of a partition whose key starts with `prefix`, in key order (Faust's rows skipped),
        from `start` on (a key after the prefix) when given: a long scan resumed in slices."""
        for key, value in self.db(partition).items(from_key=prefix if start is None else max(prefix, start)):
            if not key.startswith(prefix):
                break
            if not key.startswith(FAUST_KEYS):
                yield key, value

    def transaction(self, partition: int) -> PartitionTransaction:
        return PartitionTransaction(self, partition)

    async def put_durably(self, partition: int, key: bytes, value: bytes) -> None:
        """Write one row of a partition this worker owns; return once the changelog acknowledged it.

        RecordTooLarge, before anything is written, for a value the changelog could not take.
        """
        check_record(self.name, key, value)
        self.db(partition)[key] = value
        pending = await aiokafka_producer(self.app).send(self.changelog, value=value, key=key, partition=partition)
        metadata = await pending
        self.record_persisted(partition, metadata.offset)

    async def write_durably(self, partition: int, rows: dict[bytes, bytes | None]) -> None:
        """Write (None: delete) rows of a partition this worker owns, in one RocksDB batch; return once the
        changelog acknowledged every record, a tombstone for each delete (so no replica keeps the row).

        Each record is sent like put_durably's, so it keeps its order with those of the same key.
        """
        for key, value in rows.items():
            check_record(self.name, key, value)
        write_rows(self.db(partition), rows)
        producer = aiokafka_producer(self.app)
        send = producer.send
        pending = [await send(self.changelog, value=value, key=key, partition=partition) for key, value in rows.items()]
        if pending:
            offsets = [metadata.offset for metadata in await asyncio.gather(*pending)]
            self.record_persisted(partition, max(offsets))

    def record_persisted(self, partition: int, offset: int) -> None:
        """Advance the store's persisted changelog offset (where recovery resumes) after an ack.

        Never backwards: the done-callback of an earlier batch can run after a later write's ack
        was already recorded (found by tests/kafka/test_store.py).
        """
        tp = TP(self.changelog, partition)
        try:
            current = self.table.data.persisted_offset(tp)
            if current is None or offset > current:
                self.table.data.set_persisted_offset(tp, offset)
        except Exception:  # partition revoked and its DB closed meanwhile
            log.debug("persisted offset not recorded for revoked %s[%d]", self.changelog, partition)


class PartitionTransaction:
    """Reads and staged writes of one table partition while one event is processed."""

    def __init__(self, store: Store, partition: int) -> None:
        self.store = store
        self.partition = partition
        self.db = store.db(partition)
        self.pending: dict[bytes, bytes | None] = {}
        self.loaded: dict[bytes, bytes | None] = {}

    def prefetch(self, keys: list[bytes]) -> None:
        """One multi-get for the keys the transaction will read."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.loaded]
        if wanted:
            self.loaded.update(zip(wanted, self.db[wanted], strict=True))

    def get(self, key: bytes) -> bytes | None:
        value = self.pending.get(key, _MISSING)
        if value is _MISSING:
            value = self.loaded[key] if key in self.loaded else self.db.get(key)
        return value  # type: ignore[return-value]

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every stored (key, value) whose key starts with prefix, staged writes included."""
        seen = set()
        for key, value in self.db.items(from_key=prefix):
            if not key.startswith(prefix):
                break
            seen.add(key)
            current = self.pending.get(key, value)
            if current is not None:
                yield key, current
        for key, value in list(self.pending.items()):
            if key.startswith(prefix) and key not in seen and value is not None:
                yield key, value

    def set(self, key: bytes, value: bytes | None) -> None:
        """Stage a value (None deletes); only the last value of a key is written.

        RecordTooLarge for a value the changelog could not take: nothing is staged, so the rest of the
        transaction is written as if the caller had never tried.
        """
        check_record(self.store.name, key, value)
        self.pending[key] = value

    async def flush(self) -> None:
        """Write staged rows to RocksDB and queue them on the changelog."""
        if not self.pending:
            return
        write_rows(self.db, self.pending)
        await self._send_changelog()
        self.pending = {}

    async def _send_changelog(self) -> None:
        producer = aiokafka_producer(self.store.app)
        items = list(self.pending.items())
        while items:
            builder = producer.create_batch()
            count = 0
            for key, value in items:
                if builder.append(key=key, value=value, timestamp=None) is None:
                    break
                count += 1
            if count == 0:  # aiokafka takes any first record into an empty batch: this would loop for ever
                raise RuntimeError("aiokafka refused a record into an empty batch")
            future = await producer.send_batch(builder, self.store.changelog, partition=self.partition)
            future.add_done_callback(self._on_sent(count))
            items = items[count:]

    def _on_sent(self, count: int) -> Any:
        store, partition = self.store, self.partition

        def done(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                exc = future.exception() if not future.cancelled() else asyncio.CancelledError()
                log.critical("changelog write to %s[%d] failed: %r", store.changelog, partition, exc)
                task = asyncio.ensure_future(store.app.crash(exc))
                _crashes.add(task)
                task.add_done_callback(_crashes.discard)
                return
            store.record_persisted(partition, future.result().offset + count - 1)

        return done
