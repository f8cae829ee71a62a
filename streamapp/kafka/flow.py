"""Priority flow control on the consumer: which partitions of the priority topics are fetched.

A topic waits while its in-memory queue is full (`held`), or while a higher-ranked topic has
records unread in Kafka (high-water mark above the fetch position). The second part is what makes
a transactional message overtake a campaign: aiokafka hands out buffered records partition by
partition, so a transactional record fetched after a megabyte of campaign records would otherwise
wait for all of them to pass through Faust.

The pause is aiokafka's own, applied in the consumer's thread: aiokafka discards records it
buffered for a paused partition *without* moving its position, so they are fetched again on
resume. Faust's `pause_partitions` is not used: records of a partition paused while Faust
iterates a fetched batch are dropped and the read offset jumps, which Faust takes for a gap and
commits past (lost messages). aiokafka forgets pauses on every rebalance, so callers re-apply the
wanted state on every tick.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition


def has_unread(consumer: Any, tps: list[TopicPartition]) -> bool:
    """Whether any of the partitions has records this consumer has not handed out yet.

    Uses the high-water mark of the last fetch response and the fetch position (aiokafka's
    assignment state): both local, no request to the broker.
    """
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription else None
    if assignment is None:
        return False
    for tp in tps:
        if tp not in assignment.tps:
            continue
        highwater, position = consumer.highwater(tp), assignment.state_value(tp).position
        if highwater is not None and position is not None and highwater > position:
            return True
    return False


async def pause_by_priority(faust_consumer: Any, topics: list[str], held: set[str], partitions: set[int]) -> None:
    """Apply the wanted pauses to `partitions` of `topics` (highest priority first), in the consumer's thread."""
    thread = faust_consumer._thread

    async def apply() -> None:
        consumer = thread._ensure_consumer()
        assigned = consumer.assignment()
        wanted = set(held)
        for rank, topic in enumerate(topics[:-1]):
            if has_unread(consumer, [TopicPartition(topic, p) for p in partitions]):
                wanted.update(topics[rank + 1 :])
        target = {TopicPartition(topic, partition) for topic in wanted for partition in partitions}
        paused = {tp for tp in consumer.paused() if tp.topic in topics}
        pause = [tp for tp in target - paused if tp in assigned]
        resume = [tp for tp in paused - target if tp in assigned]
        if pause:
            consumer.pause(*pause)
        if resume:
            consumer.resume(*resume)

    await thread.call_thread(apply)
