"""Offsets that skip the send agent: detected by the tracker, read again from the broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import NamedTuple

import pytest
from aiokafka import AIOKafkaProducer

from streamapp.core.ids import new_message_id
from streamapp.core.models import SendMessage, encode
from streamapp.kafka.gaps import OffsetTracker, read_range


class TP(NamedTuple):
    topic: str
    partition: int


def test_a_jump_ahead_is_a_gap_and_going_back_is_not() -> None:
    tracker = OffsetTracker()
    tp = TP("t", 3)
    assert tracker.seen(tp, 10) is None  # the first offset after an assignment is wherever it starts
    assert tracker.seen(tp, 11) is None
    assert tracker.seen(tp, 14) == (12, 14)
    assert tracker.seen(tp, 12) is None and tracker.seen(tp, 15) is None  # a re-read, then on
    tracker.forget([3])
    assert tracker.seen(tp, 40) is None


@pytest.mark.integration
def test_the_skipped_range_is_read_again_from_the_broker(kafka: str) -> None:
    topic = f"gaps-{uuid.uuid4().hex[:8]}"
    bootstrap = kafka.removeprefix("kafka://")
    sent = [
        SendMessage(messageId=new_message_id(0), database="members", originalId=f"g{i}", priority="campaign",
                    template="news", enqueuedAt="2026-11-27T00:00:00+00:00")
        for i in range(6)
    ]  # fmt: skip

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for message in sent:
                await producer.send_and_wait(topic, encode(message), partition=0)
        finally:
            await producer.stop()

    asyncio.run(publish())
    again = asyncio.run(read_range(bootstrap, topic, 0, 2, 5))
    assert [m.originalId for m in again] == ["g2", "g3", "g4"]
