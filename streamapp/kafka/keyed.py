"""Keyed records to an explicit partition through a worker's Faust producer (segment change events).

The commands publisher sends unkeyed chunks; an event a consumer reads per recipient needs the
recipient's key and must land in the recipient's partition, which the caller names (it computed it
like every writer does: murmur2 of the key, streamapp.core.keys).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

#: Queue (key, value) for `partition` of `topic`; the awaitable it returns resolves on Kafka's ack.
KeyedSend = Callable[[str, bytes, bytes, int], Awaitable[Awaitable[Any]]]


def keyed_send(app: faust.App) -> KeyedSend:
    """Send through the app's producer, resolved per call (Faust starts it late)."""

    async def send(topic: str, key: bytes, value: bytes, partition: int) -> Awaitable[Any]:
        ack: Awaitable[Any] = await app.producer.send(topic, key, value, partition, None, None)
        return ack

    return send
