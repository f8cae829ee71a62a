"""Source topics exist with the configured partitions before a worker subscribes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.kafka.topics import TopicError, bootstrap_servers, ensure_topics, source_topics
from streamapp.settings import Settings, load_settings
from tests.fixtures import WorkerPool, config_text, eventually, free_port

pytestmark = pytest.mark.integration


def settings_for(kafka: str, tmp_path: Path, partitions: int, service_id: str) -> Settings:
    path = tmp_path / "streamapp.toml"
    path.write_text(config_text(kafka, tmp_path / "data", free_port(), service_id, partitions))
    return load_settings(path, {})


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
    finally:
        await admin.close()


def test_creates_source_topics_with_configured_partitions(kafka: str, tmp_path: Path) -> None:
    settings = settings_for(kafka, tmp_path, 6, f"t{uuid.uuid4().hex[:8]}")
    asyncio.run(ensure_topics(settings))
    asyncio.run(ensure_topics(settings))  # idempotent
    names = source_topics(settings)
    # A topic just created may be described with no partitions until its leaders are elected.
    eventually(lambda: asyncio.run(partition_counts(settings, names)) == dict.fromkeys(names, 6), timeout=20)


def test_worker_refuses_a_topic_with_other_partitions(kafka: str, tmp_path: Path) -> None:
    pool = WorkerPool(kafka, tmp_path)
    settings = settings_for(kafka, tmp_path, 4, pool.service_id)

    async def precreate() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(source_topics(settings)[0], 2, 1)])
        finally:
            await admin.close()

    asyncio.run(precreate())
    with pytest.raises(TopicError, match=r"has 2 partitions but service\.partitions is 4"):
        asyncio.run(ensure_topics(settings))
    worker = pool.create(partitions=4, start=False)
    worker.start()
    assert worker.process is not None
    assert worker.process.wait(60) == 2
    assert "partitions cannot change once data exists" in worker.tail()
