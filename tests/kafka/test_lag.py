"""Consumer lag from the broker's offsets (streamapp.kafka.lag): the rules, then a real broker and worker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from streamapp.kafka.lag import EndOffsetHistory, LagReader, partition_lag
from streamapp.kafka.topics import bootstrap_servers, commands_topic
from streamapp.settings import Settings, load_settings
from tests.fixtures import Worker, client, config_text, eventually, free_port


def history(*samples: tuple[float, int]) -> EndOffsetHistory:
    h = EndOffsetHistory()
    for at, end in samples:
        h.add(at, end)
    return h


def test_the_time_a_record_was_produced_is_interpolated_between_end_offset_samples() -> None:
    h = history((100.0, 0), (110.0, 100), (120.0, 100), (130.0, 300))
    assert h.produced_at(50) == pytest.approx(105.0)  # offset 50 was written between 100 s and 110 s
    assert h.produced_at(100) == pytest.approx(120.0)  # the first record after the quiet 10 s
    assert h.produced_at(200) == pytest.approx(125.0)
    assert h.produced_at(300) == 130.0  # not produced yet: the newest sample bounds it
    assert history((100.0, 40)).produced_at(10) is None  # older than every sample


def test_a_recreated_topic_forgets_the_old_samples() -> None:
    h = history((100.0, 500), (110.0, 600))
    h.add(120.0, 3)
    assert list(h.ends) == [3]


def test_lag_is_end_minus_committed_or_minus_the_log_start_without_a_commit() -> None:
    h = history((0.0, 0), (10.0, 100))
    lag = partition_lag(("t", 0), end=100, committed=40, start=0, history=h, now=25.0)
    assert (lag.records, lag.seconds) == (60, pytest.approx(21.0))  # offset 40 was produced at 4 s
    assert partition_lag(("t", 0), end=100, committed=None, start=30, history=h, now=25.0).records == 70
    assert partition_lag(("t", 0), end=100, committed=-1, start=0, history=h, now=25.0).records == 100
    idle = partition_lag(("t", 0), end=100, committed=100, start=0, history=h, now=25.0)
    assert (idle.records, idle.seconds) == (0, 0.0)
    # A committed offset past a truncated end (never negative) and a record older than every sample.
    assert partition_lag(("t", 0), end=100, committed=120, start=0, history=h, now=25.0).records == 0
    assert partition_lag(("t", 0), end=100, committed=0, start=0, history=history((10.0, 100)), now=25.0).seconds == 15


# -- against the real broker ------------------------------------------------------------------------------


def settings_for(kafka: str, tmp_path: Path) -> Settings:
    path = tmp_path / "streamapp.toml"
    path.write_text(config_text(kafka, tmp_path / "data", free_port(), f"t{uuid.uuid4().hex[:8]}", 2))
    return load_settings(path, {})


async def produce_and_commit(settings: Settings, topic: str, group: str, records: int, commit: int) -> None:
    """`records` records in each of the topic's 2 partitions; the group commits `commit` on partition 0 only
    (partition 1 is never read: a dead or paused consumer)."""
    servers = bootstrap_servers(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for partition in (0, 1):
            for i in range(records):
                await producer.send(topic, b"x%d" % i, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(commit, "")})
    finally:
        await consumer.stop()


@pytest.mark.integration
def test_the_broker_says_the_lag_of_every_partition_read_or_not(kafka: str, tmp_path: Path) -> None:
    settings = settings_for(kafka, tmp_path)
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"

    async def scenario() -> dict[int, int]:
        await produce_and_commit(settings, topic, group, records=25, commit=10)
        reader = LagReader(settings, group, [topic])
        await reader.start()
        try:
            return {lag.partition: lag.records for lag in await reader.read()}
        finally:
            await reader.close()

    assert asyncio.run(scenario()) == {0: 15, 1: 25}


@pytest.mark.integration
def test_a_worker_exports_the_lag_of_every_partition_of_its_topics(worker: Worker) -> None:
    """All 4 partitions of the commands topic, owned or not, and 0 once the agent has read what was written."""
    settings = load_settings(worker.config, {})
    topic = commands_topic(settings)
    with client(worker) as api:
        assert (
            api.put("/api/v1/databases/members/recipients/LAG1", json={"email": "lag1@example.com"}).status_code == 202
        )

    def lags() -> dict[str, float]:
        text = httpx.get(f"{worker.url}/metrics", timeout=5).text
        return {
            s.labels["partition"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "streamapp_consumer_lag_records" and s.labels["topic"] == topic
        }

    eventually(lambda: lags() == {str(p): 0.0 for p in range(settings.service.partitions)}, timeout=30)
