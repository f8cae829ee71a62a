"""Reads and durable writes of the message ledger (table `messages`).

A write returns only once Kafka acknowledged the changelog record. That is what bounds the
duplicates after a crash: a sender takes its next message only after the outcome of the last one
is in the changelog, so at most one accepted-but-unrecorded message per sender task can be sent
again by the worker that takes the partition over (docs/sending.md).

Like a PartitionTransaction (streamapp.kafka.store), rows go straight to the partition's RocksDB
and to the changelog through aiokafka (concurrent writes share produce batches: group commit for
free), bypassing Faust's per-key path, and the store's persisted changelog offset advances on
each ack.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator

import msgspec

from streamapp.core.ids import batch_prefix
from streamapp.core.models import MessageState, decode_state, encode
from streamapp.kafka.store import Store

log = logging.getLogger(__name__)


class _StatusOnly(msgspec.Struct):
    database: str
    status: str


#: Counting a batch reads only the status of each row (half the cost of a full decode).
_status_decoder = msgspec.msgpack.Decoder(_StatusOnly)


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, partition: int, message_id: str) -> MessageState | None:
        raw = self.store.get(partition, message_id.encode())
        return decode_state(raw) if raw is not None else None

    async def put(self, partition: int, state: MessageState) -> None:
        """Write the row locally, then wait for the changelog's acknowledgement."""
        await self.store.put_durably(partition, state.messageId.encode(), encode(state))

    def count_batch(self, partition: int, batch_id: str, database: Callable[[str], bool]) -> Counter[str]:
        """Statuses of a batch's messages in this partition (one range of keys, streamapp.core.ids),
        counting only rows of databases for which `database(name)` holds."""
        prefix = batch_prefix(partition, batch_id)
        counts: Counter[str] = Counter()
        for _, raw in self.store.items(partition, prefix):
            row = _status_decoder.decode(raw)
            if database(row.database):
                counts[row.status] += 1
        return counts

    def pending(self, partition: int) -> Iterator[MessageState]:
        """Every row of the partition that may still be sent (scheduled or deferred)."""
        for key, raw in self.store.items(partition):
            try:
                state = decode_state(raw)
            except msgspec.DecodeError:
                log.error("undecodable ledger row %r in partition %d", key, partition)
                continue
            if state.waiting():
                yield state
