"""Publish SendMessage commands to the priority topics (the trigger API, tests and benchmarks).

Each message goes to its recipient's partition, which is also the partition its id names, so
the send agent for that partition reads the recipient and writes the ledger locally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from streamapp.core.ids import partition_of
from streamapp.core.keys import partition_for, recipient_key
from streamapp.core.models import SendMessage, encode
from streamapp.kafka.publisher import Send, aiokafka_send, started_producer
from streamapp.kafka.topics import messages_topic
from streamapp.settings import Settings


def partition_of_message(message: SendMessage, partitions: int) -> int:
    """The recipient's partition; the message id must name the same one."""
    partition = partition_for(recipient_key(message.database, message.originalId), partitions)
    if partition_of(message.messageId) != partition:
        raise ValueError(f"message id {message.messageId!r} does not name partition {partition} of its recipient")
    return partition


async def publish_messages(send: Send, settings: Settings, messages: Sequence[SendMessage]) -> None:
    """Send through a started producer (publisher.Send); return once Kafka acknowledged every message."""
    partitions = settings.service.partitions
    pending = [
        await send(messages_topic(settings, m.priority), encode(m), partition_of_message(m, partitions))
        for m in messages
    ]
    await asyncio.gather(*pending)


async def enqueue_with(producer: AIOKafkaProducer, settings: Settings, messages: Sequence[SendMessage]) -> None:
    """Send through a started aiokafka producer; return once Kafka acknowledged every message."""
    await publish_messages(aiokafka_send(producer), settings, messages)


async def enqueue(settings: Settings, messages: Sequence[SendMessage]) -> None:
    """Publish with a producer of its own (acks=all); returns once every message is acknowledged."""
    async with started_producer(settings) as producer:
        await enqueue_with(producer, settings, messages)
