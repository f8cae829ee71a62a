"""The segment definitions topic on a real broker: every reader sees a PUT within 1 s, and rebuilds on restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.kafka.catalog_topic import CatalogReader, CatalogWriter
from streamapp.kafka.topics import (
    TopicError,
    bootstrap_servers,
    cleanup_policy,
    ensure_topics,
    segment_definitions_topic,
)
from streamapp.segments.catalog import SegmentCatalog, UnknownSegment
from streamapp.settings import Settings, load_settings
from tests.fixtures import config_text, free_port

pytestmark = pytest.mark.integration

SWEDISH = {"attribute": "firstname", "op": "starts_with", "value": "Sv"}


def settings_for(kafka: str, tmp_path: Path) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "streamapp.toml"
    path.write_text(config_text(kafka, tmp_path / "data", free_port(), f"t{uuid.uuid4().hex[:8]}"))
    return load_settings(path, {})


class Worker:
    """What each worker runs: its own catalog, fed by its own reader of the whole topic."""

    def __init__(self, settings: Settings) -> None:
        self.catalog = SegmentCatalog(settings)
        self.reader = CatalogReader(settings, self.catalog.apply_all)
        self.changed = asyncio.Event()
        self.catalog.subscribe(lambda changes: self.changed.set())

    def has(self, name: str) -> bool:
        try:
            self.catalog.get("members", name)
        except UnknownSegment:
            return False
        return True


async def seen_within(worker: Worker, name: str, present: bool, seconds: float) -> None:
    """Return once `name` is (or is no longer) in the worker's catalog; TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        while worker.has(name) != present:
            await worker.changed.wait()
            worker.changed.clear()


async def put(worker: Worker, writer: CatalogWriter, name: str, definition: object) -> int:
    write = worker.catalog.prepare_put("members", name, definition)
    return await writer.write(write.key, write.value)


async def delete(worker: Worker, writer: CatalogWriter, name: str) -> int:
    write = worker.catalog.prepare_delete("members", name)
    return await writer.write(write.key, write.value)


def test_a_put_reaches_every_reader_and_a_restart_rebuilds(kafka: str, tmp_path: Path) -> None:
    settings = settings_for(kafka, tmp_path)

    async def scenario() -> None:
        await ensure_topics(settings)
        one, two = Worker(settings), Worker(settings)
        await one.reader.start()
        await two.reader.start()
        writer = CatalogWriter(settings, one.reader)
        await writer.start()
        try:
            started = time.monotonic()
            offset = await put(one, writer, "swedes", SWEDISH)
            assert one.has("swedes")  # the writer waited for its own reader: a GET right after sees it
            assert one.catalog.get("members", "swedes").offset == offset
            await seen_within(two, "swedes", True, 1.0)
            assert time.monotonic() - started < 1.0  # from the PUT on one worker to the catalog of the other
            assert two.catalog.get("members", "swedes").definition == SWEDISH
            await put(one, writer, "fans", {"not": {"segment": "swedes"}})
            await put(one, writer, "swedes", {**SWEDISH, "value": "Fi"})
            await seen_within(two, "fans", True, 1.0)

            started = time.monotonic()
            await delete(one, writer, "fans")
            assert not one.has("fans")
            await seen_within(two, "fans", False, 1.0)
            assert time.monotonic() - started < 1.0

            await two.reader.stop()  # a worker restarts: a new catalog, read again from the beginning
            again = Worker(settings)
            await again.reader.start()  # returns once caught up with the end
            assert [e.name for e in again.catalog.segments("members")] == ["swedes"]
            assert again.catalog.segments("members") == one.catalog.segments("members")
            assert again.catalog.get("members", "swedes").version == 2
            await again.reader.stop()
        finally:
            await writer.stop()
            await one.reader.stop()
            await two.reader.stop()

    asyncio.run(scenario())


def test_the_topic_is_single_and_compacted_or_the_worker_refuses(kafka: str, tmp_path: Path) -> None:
    settings = settings_for(kafka, tmp_path)
    name = segment_definitions_topic(settings)

    async def scenario() -> None:
        await ensure_topics(settings)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
        await admin.start()
        try:
            assert await cleanup_policy(admin, name) == "compact"
            [description] = await admin.describe_topics([name])
            assert len(description["partitions"]) == 1
            other = settings_for(kafka, tmp_path / "other")
            await admin.create_topics([NewTopic(segment_definitions_topic(other), 1, 1)])  # cleanup.policy=delete
        finally:
            await admin.close()
        with pytest.raises(
            TopicError, match=r"cleanup\.policy=delete; segment definitions need cleanup\.policy=compact"
        ):
            await ensure_topics(other)

    asyncio.run(scenario())
