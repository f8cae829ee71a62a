"""Publishing recipient commands: grouped per partition, acknowledged before returning.

Callers (API, imports) get control back only once Kafka has acknowledged
every event, which is what lets the API answer 202 without losing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.exceptions import NotReady

from streamapp.core.keys import partitions_for, recipient_key
from streamapp.core.models import Command, CommandBatch, RecipientCommand, encode
from streamapp.kafka.security import client_options
from streamapp.kafka.topics import bootstrap_servers
from streamapp.settings import Settings

#: How long a request's write may wait for Kafka: a healthy broker acknowledges in milliseconds, so
#: past this the broker is out (aiokafka would wait for it for ever) and the answer is a 503.
ACK_DEADLINE = 15.0

#: Commands per event; keeps an event far below Kafka's 1 MB message limit.
CHUNK = 1000
MAX_EVENT_BYTES = 900_000


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge a write within its deadline: the write may or may not have happened."""


@contextlib.asynccontextmanager
async def acknowledged_within(seconds: float | None) -> AsyncIterator[None]:
    """Raise KafkaUnavailable if the block (sends and their acks) takes longer than `seconds` (None: no limit)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise KafkaUnavailable(f"Kafka did not acknowledge within {seconds:.0f} s") from None


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


def faust_send(app: faust.App) -> Send:
    """Send through a Faust app's producer (inside a worker; resolved per call, as Faust starts it late).

    Before that producer has started (a worker starting or stopping), KafkaUnavailable (a 503), not
    Faust's NotReady (which was a 500).
    """

    async def send(topic: str, value: bytes, partition: int) -> Awaitable[Any]:
        try:
            ack: Awaitable[Any] = await app.producer.send(topic, None, value, partition, None, None)
        except NotReady as exc:
            raise KafkaUnavailable(f"Kafka producer not ready: {exc}") from None
        return ack

    return send


def aiokafka_send(producer: AIOKafkaProducer) -> Send:
    """Send through a plain aiokafka producer (import jobs, the CLI)."""
    return lambda topic, value, partition: producer.send(topic, value=value, partition=partition)


def new_producer(settings: Settings, linger_ms: int = 5) -> AIOKafkaProducer:
    """The one producer configuration outside a worker's Faust app: acks from every replica, large batches."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings),
        acks="all",
        max_batch_size=512 * 1024,
        linger_ms=linger_ms,
        **client_options(settings),
    )


@contextlib.asynccontextmanager
async def started_producer(settings: Settings, linger_ms: int = 5) -> AsyncIterator[AIOKafkaProducer]:
    producer = new_producer(settings, linger_ms)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


class AckWindow:
    """Groups of sends whose acknowledgements may be outstanding, at most `size` groups (bounds memory).

    Producing the next chunk while earlier ones are in flight keeps the broker busy; awaiting the
    oldest group once the window is full keeps what a crash can leave unacknowledged bounded.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.groups: deque[list[Awaitable[Any]]] = deque()

    async def add(self, acks: list[Awaitable[Any]]) -> None:
        self.groups.append(acks)
        while len(self.groups) > self.size:
            await asyncio.gather(*self.groups.popleft())

    async def drain(self, return_exceptions: bool = False) -> None:
        """Wait for every outstanding acknowledgement (raising the first failure unless told not to)."""
        while self.groups:
            await asyncio.gather(*self.groups.popleft(), return_exceptions=return_exceptions)


class CommandPublisher:
    """Sends command batches to the recipient-commands topic.

    With a `deadline` (the API's publisher: ACK_DEADLINE), `publish` and `publish_everywhere` raise
    KafkaUnavailable when Kafka has not acknowledged in time; without (the send engine, imports),
    they wait for the broker to come back.
    """

    def __init__(self, send: Send, topic: str, partitions: int, deadline: float | None = None) -> None:
        self.send = send
        self.topic = topic
        self.partitions = partitions
        self.deadline = deadline

    async def publish_everywhere(self, command: Command) -> None:
        """Send one command to every partition (after what was published before it)."""
        data = encode(CommandBatch([command]))
        async with acknowledged_within(self.deadline):
            pending = [await self.send(self.topic, data, p) for p in range(self.partitions)]
            await asyncio.gather(*pending)

    async def publish_to(self, command: Command, partition: int) -> None:
        """Send one command to one partition; return once Kafka acknowledged it."""
        await (await self.send(self.topic, encode(CommandBatch([command])), partition))

    async def publish(self, commands: Sequence[RecipientCommand]) -> None:
        """Return once Kafka acknowledged every command; raise if any send failed."""
        async with acknowledged_within(self.deadline):
            await asyncio.gather(*await self.enqueue(commands))

    async def enqueue(self, commands: Sequence[RecipientCommand]) -> list[Awaitable[Any]]:
        """Queue the commands in order; the returned awaitables resolve on Kafka's acks."""
        pending = []
        for partition, group in group_by_partition(commands, self.partitions).items():
            for chunk in encode_chunks(group):
                pending.append(await self.send(self.topic, chunk, partition))
        return pending
