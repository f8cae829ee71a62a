"""The RocksDB store and its changelog, tested directly: a real RocksDB and a real broker's changelog topic."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.kafka.app import new_faust_app
from streamapp.kafka.store import FAUST_KEYS, MAX_CHANGELOG_RECORD, RecordTooLarge, Store
from streamapp.settings import load_settings
from streamapp.tables.recipients import recipients_table
from tests.fixtures import config_text
from tests.kafka.changelogs import changelog_records

pytestmark = pytest.mark.integration


_changelog = changelog_records


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


@asynccontextmanager
async def _started_store(kafka: str, tmp_path: Path) -> AsyncIterator[tuple[Store, str]]:
    """A recipients Store of a fresh app (changelog topic created, producer started) and the bootstrap address."""
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text(kafka, tmp_path / "data", 1, f"store-{uuid.uuid4().hex[:8]}", partitions=1))
    app = new_faust_app(load_settings(config, environ={}))
    store = Store(app, recipients_table(app, 1))
    bootstrap = kafka.removeprefix("kafka://")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(store.changelog, 1, 1)])
    await admin.close()
    await app.producer.start()
    try:
        yield store, bootstrap
    finally:
        await app.producer.stop()


async def _refuses_what_the_changelog_cannot_take(kafka: str, tmp_path: Path) -> None:
    async with _started_store(kafka, tmp_path) as (store, bootstrap):
        tx = store.transaction(0)
        tx.set(b"members/a", b"A")
        with pytest.raises(RecordTooLarge, match="members/big"):
            tx.set(b"members/big", b"x" * MAX_CHANGELOG_RECORD)  # key + value: over by the key
        near = b"y" * (MAX_CHANGELOG_RECORD - len(b"members/near"))  # exactly the limit: the broker takes it
        tx.set(b"members/near", near)
        assert b"members/big" not in tx.pending
        await tx.flush()
        await store.app.producer.flush()
        with pytest.raises(RecordTooLarge):
            await store.put_durably(0, b"members/big", b"x" * (2 * MAX_CHANGELOG_RECORD))
        assert store.get(0, b"members/big") is None  # refused before RocksDB was written
        await store.put_durably(0, b"members/c", b"C")
        records = await _changelog(bootstrap, store.changelog, 0)
        assert [(k, len(v or b"")) for k, v in records] == [
            (b"members/a", 1),
            (b"members/near", len(near)),
            (b"members/c", 1),
        ]
        assert store.table.data.persisted_offset(_tp(store.changelog, 0)) == 2


def test_a_value_the_changelog_cannot_take_is_refused_before_anything_is_written(kafka: str, tmp_path: Path) -> None:
    """The last line of defence of SPEC §3: such a value used to fail the changelog send and crash the worker."""
    asyncio.run(_refuses_what_the_changelog_cannot_take(kafka, tmp_path))
