"""Records that skipped an agent: detected (an alarm) and, for the send engine, read again.

Our source topics are neither compacted nor transactional, so a partition's offsets are
contiguous and an agent should see them one after another. Records did skip agents: Faust's
rebalance path emptied the agents' buffers after handing them records, then committed past
them (docs/architecture.md, "Why no record skips an agent"); streamapp.kafka.transport now
prevents it, and this check stays as the alarm (the skip counters must stay 0). A skip shows
as a jump at the next record. The send engine then reads the missing range with a consumer of
its own (no group, read_committed) and processes those messages like any other: the ledger
makes a message seen twice harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamapp.core.models import SendMessage, decode_send

log = logging.getLogger(__name__)


class OffsetTracker:
    """The next offset expected of each topic partition this worker reads."""

    def __init__(self) -> None:
        self.next: dict[Any, int] = {}

    def seen(self, tp: Any, offset: int) -> tuple[int, int] | None:
        """Record `offset`; return the skipped range [start, end) when it jumped ahead."""
        expected = self.next.get(tp)
        self.next[tp] = max(offset + 1, expected or 0)
        if expected is not None and offset > expected:
            return expected, offset
        return None

    def forget(self, partitions: Iterable[int]) -> None:
        """A revoked partition starts over wherever its next owner left it."""
        gone = set(partitions)
        for tp in [tp for tp in self.next if tp.partition in gone]:
            del self.next[tp]


async def read_range(
    bootstrap: str, topic: str, partition: int, start: int, end: int, security: Mapping[str, Any] | None = None
) -> list[SendMessage]:
    """The messages at offsets [start, end) of one partition (`security`: streamapp.kafka.security.client_options)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", **(security or {}))  # fmt: skip
    tp = TopicPartition(topic, partition)
    messages: list[SendMessage] = []
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.offset < end and record.value is not None:
                    messages.append(decode_send(record.value))
            if not batch and await consumer.position(tp) >= (await consumer.end_offsets([tp]))[tp]:
                break
    finally:
        await consumer.stop()
    return messages
