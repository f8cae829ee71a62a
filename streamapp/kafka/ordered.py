"""Durable writes whose changelog records keep the order of their RocksDB writes, each write in one batch.

Store.put_durably and Store.write_durably send each record with `producer.send`, which waits when the
partition's open batch is full; writers woken from that wait append in no set order. That is harmless
for a key only one task writes (a message's ledger row), not for a key many tasks update in turn (a
batch's counters in streamapp.sending.ledger): RocksDB would end with the last update and the
changelog, hence a recovered replica, with another. Here the writes of a partition queue up in the
order their RocksDB writes were made, and one task per partition sends them, several writes per
record batch (group commit), each write's rows in the same record batch: Kafka appends a batch
whole, so a replica never sees a ledger row without its counters. Only a write larger than a batch
(`producer_max_batch_size`) is split.

A write returns once the changelog acknowledged all its records; the store's persisted offset
advances then. A failed send fails its writes and crashes the worker, as a PartitionTransaction's
does (recovery resumes from the last acknowledged record).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from streamapp.kafka.store import Store, aiokafka_producer, check_record, write_rows

log = logging.getLogger(__name__)

#: Bytes a record takes in a batch beyond its key and value (headers, varints), estimated high.
_RECORD_OVERHEAD = 64

_Write = tuple[list[tuple[bytes, bytes | None]], "asyncio.Future[None]"]


class OrderedWriter:
    """Ordered, atomic-per-write durable writes to one Store (see the module)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queues: dict[int, list[_Write]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._crashes: set[asyncio.Task[Any]] = set()

    async def write(self, partition: int, rows: Mapping[bytes, bytes | None]) -> None:
        """Write (None: delete) `rows` to the partition's RocksDB now, then await the changelog's acks.

        RecordTooLarge before anything is written for a value the changelog could not take. The
        RocksDB write and the queueing happen without a pause, so callers that read and update a row
        on the event loop get their changelog records in the order of their updates.
        """
        for key, value in rows.items():
            check_record(self.store.name, key, value)
        write_rows(self.store.db(partition), rows)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(partition, []).append((list(rows.items()), done))
        if partition not in self._senders:
            self._senders[partition] = asyncio.ensure_future(self._drain(partition))
        await asyncio.shield(done)

    async def _drain(self, partition: int) -> None:
        """Send the partition's queued writes, in order, until none is left.

        The next batch is built only once the last one is acknowledged: the writes queued meanwhile
        all go in it (aiokafka holds a partition's next batch back while a request is in flight
        anyway, so waiting costs no time and groups the most).
        """
        try:
            while writes := self._queues.pop(partition, None):
                try:
                    last = await self._send(partition, writes)
                except Exception as exc:
                    self._failed([future for _, future in writes], exc)
                    continue
                if last is not None:
                    await asyncio.wait([last])
        finally:
            del self._senders[partition]

    async def _send(self, partition: int, writes: list[_Write]) -> asyncio.Future[Any] | None:
        producer = aiokafka_producer(self.store.app)
        limit = int(self.store.app.conf.producer_max_batch_size)
        members: list[asyncio.Future[None]] = []
        builder, count = producer.create_batch(), 0
        for records, future in writes:
            size = sum(len(key) + len(value or b"") + _RECORD_OVERHEAD for key, value in records)
            if count and builder.size() + size > limit:
                await self._submit(partition, builder, members, count)
                builder, members, count = producer.create_batch(), [], 0
            for key, value in records:
                if builder.append(key=key, value=value, timestamp=None) is None:  # one write alone passes a batch
                    await self._submit(partition, builder, members, count)
                    builder, members, count = producer.create_batch(), [], 0
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        raise RuntimeError("aiokafka refused a record into an empty batch")
                count += 1
            members.append(future)  # resolved by the batch holding its last record
        return await self._submit(partition, builder, members, count) if count else None

    async def _submit(
        self, partition: int, builder: Any, members: list[asyncio.Future[None]], count: int
    ) -> asyncio.Future[Any]:
        """Queue one record batch (after the partition's previous one is drained); resolve on its ack."""
        producer = aiokafka_producer(self.store.app)
        ack = await producer.send_batch(builder, self.store.changelog, partition=partition)

        def acked(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                self._failed(members, future.exception() or asyncio.CancelledError())
                return
            self.store.record_persisted(partition, future.result().offset + count - 1)
            for member in members:
                if not member.done():
                    member.set_result(None)

        ack.add_done_callback(acked)
        return ack  # type: ignore[no-any-return]

    def _failed(self, members: list[asyncio.Future[None]], exc: BaseException) -> None:
        log.critical("changelog write to %s failed: %r", self.store.changelog, exc)
        for member in members:
            if not member.done():
                member.set_exception(exc)
        task = asyncio.ensure_future(self.store.app.crash(exc))
        self._crashes.add(task)
        task.add_done_callback(self._crashes.discard)
