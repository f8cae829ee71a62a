"""Publishing recipient commands: grouped per partition, acknowledged before returning.

Callers (API, imports) get control back only once Kafka has acknowledged
every event, which is what lets the API answer 202 without losing anything.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streamapp.core.keys import partitions_for, recipient_key
from streamapp.core.models import Command, CommandBatch, RecipientCommand, encode

#: Commands per event; keeps an event far below Kafka's 1 MB message limit.
CHUNK = 1000
MAX_EVENT_BYTES = 900_000


def group_by_partition(commands: Sequence[RecipientCommand], partitions: int) -> dict[int, list[Command]]:
    """Order within each partition follows the input order."""
    groups: dict[int, list[Command]] = defaultdict(list)
    keys = [recipient_key(command.database, command.originalId) for command in commands]
    for command, partition in zip(commands, partitions_for(keys, partitions), strict=True):
        groups[partition].append(command)
    return groups


def encode_chunks(commands: list[Command]) -> list[bytes]:
    """Encode in chunks of at most CHUNK commands and MAX_EVENT_BYTES bytes."""
    chunks: list[bytes] = []
    for start in range(0, len(commands), CHUNK):
        chunks.extend(_encode_bounded(commands[start : start + CHUNK]))
    return chunks


def _encode_bounded(commands: list[Command]) -> list[bytes]:
    data = encode(CommandBatch(commands))
    if len(data) <= MAX_EVENT_BYTES or len(commands) == 1:
        return [data]
    half = len(commands) // 2
    return _encode_bounded(commands[:half]) + _encode_bounded(commands[half:])


#: Queue `value` for `partition` of `topic`; the awaitable it returns resolves on Kafka's ack.
Send = Callable[[str, bytes, int], Awaitable[Awaitable[Any]]]


def faust_send(producer: Any) -> Send:
    """Send through a Faust app's producer (inside a worker)."""
    return lambda topic, value, partition: producer.send(topic, None, value, partition, None, None)


def aiokafka_send(producer: Any) -> Send:
    """Send through a plain aiokafka producer (import jobs, the CLI)."""
    return lambda topic, value, partition: producer.send(topic, value=value, partition=partition)


class CommandPublisher:
    """Sends command batches to the recipient-commands topic."""

    def __init__(self, send: Send, topic: str, partitions: int) -> None:
        self.send = send
        self.topic = topic
        self.partitions = partitions

    async def publish_everywhere(self, command: Command) -> None:
        """Send one command to every partition (after what was published before it)."""
        data = encode(CommandBatch([command]))
        pending = [await self.send(self.topic, data, p) for p in range(self.partitions)]
        await asyncio.gather(*pending)

    async def publish_to(self, command: Command, partition: int) -> None:
        """Send one command to one partition; return once Kafka acknowledged it."""
        await (await self.send(self.topic, encode(CommandBatch([command])), partition))

    async def publish(self, commands: Sequence[RecipientCommand]) -> None:
        """Return once Kafka acknowledged every command; raise if any send failed."""
        await asyncio.gather(*await self.enqueue(commands))

    async def enqueue(self, commands: Sequence[RecipientCommand]) -> list[Awaitable[Any]]:
        """Queue the commands in order; the returned awaitables resolve on Kafka's acks."""
        pending = []
        for partition, group in group_by_partition(commands, self.partitions).items():
            for chunk in encode_chunks(group):
                pending.append(await self.send(self.topic, chunk, partition))
        return pending
