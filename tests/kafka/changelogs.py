"""Reading a changelog partition back from the broker, as a replica restoring it would."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def changelog_records(bootstrap: str, topic: str, partition: int) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) record of the partition, in offset order (None: a tombstone)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[tuple[bytes, bytes | None]] = []
        while await consumer.position(tp) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=1000)).values():
                records.extend((r.key, r.value) for r in batch)
        return records
    finally:
        await consumer.stop()
