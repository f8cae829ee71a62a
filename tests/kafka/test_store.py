"""The RocksDB store and its changelog, tested directly: a real RocksDB and a real broker's changelog topic."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.kafka.app import new_faust_app
from streamapp.kafka.store import FAUST_KEYS, Store
from streamapp.settings import load_settings
from streamapp.tables.recipients import recipients_table
from tests.fixtures import config_text

pytestmark = pytest.mark.integration


async def _changelog(bootstrap: str, topic: str, partition: int) -> list[tuple[bytes, bytes | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[tuple[bytes, bytes | None]] = []
        while len(records) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=1000)).values():
                records.extend((r.key, r.value) for r in batch)
        return records
    finally:
        await consumer.stop()


async def _exercise(kafka: str, tmp_path: Path) -> None:
    service_id = f"store-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text(kafka, tmp_path / "data", 1, service_id, partitions=2))
    settings = load_settings(config, environ={})
    app = new_faust_app(settings)
    store = Store(app, recipients_table(app, 2))
    bootstrap = kafka.removeprefix("kafka://")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(store.changelog, 2, 1)])
    await admin.close()
    await app.producer.start()
    try:
        tx = store.transaction(1)
        tx.set(b"members/a", b"A1")
        tx.set(b"members/b", b"B1")
        tx.set(b"members/a", b"A2")  # only the last value of a key is written
        assert tx.get(b"members/a") == b"A2" and store.get(1, b"members/a") is None  # staged, not yet stored
        assert sorted(tx.scan(b"members/")) == [(b"members/a", b"A2"), (b"members/b", b"B1")]
        await tx.flush()
        await app.producer.flush()
        assert store.get(1, b"members/a") == b"A2" and store.get(1, b"members/b") == b"B1"

        tx = store.transaction(1)
        tx.prefetch([b"members/a", b"members/zz"])
        tx.set(b"members/b", None)  # a delete is a tombstone on the changelog
        await tx.flush()
        await store.put_durably(1, b"members/c", b"C1")  # returns once the changelog acknowledged it
        assert store.get(1, b"members/b") is None
        assert [k for k, _ in store.items(1, b"members/")] == [b"members/a", b"members/c"]

        records = await _changelog(bootstrap, store.changelog, 1)
        assert records == [(b"members/a", b"A2"), (b"members/b", b"B1"), (b"members/b", None), (b"members/c", b"C1")]
        assert await _changelog(bootstrap, store.changelog, 0) == []  # a partition's rows stay in its partition
        # Recovery resumes after the last acknowledged record; Faust's own bookkeeping rows are not rows.
        assert store.table.data.persisted_offset(_tp(store.changelog, 1)) == 3
        assert not any(k.startswith(FAUST_KEYS) for k, _ in store.items(1))
    finally:
        await app.producer.stop()


def _tp(topic: str, partition: int) -> object:
    from faust.types import TP

    return TP(topic, partition)


def test_a_transaction_writes_rocksdb_and_the_changelog_once_per_key(kafka: str, tmp_path: Path) -> None:
    asyncio.run(_exercise(kafka, tmp_path))
