"""Commands are grouped by the partition Kafka's default partitioner gives their key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamapp.core.keys import partition_for, partitions_for, recipient_key
from streamapp.core.models import DeleteRecipient, UpsertRecipient, decode_batch
from streamapp.kafka.app import new_faust_app
from streamapp.kafka.publisher import KafkaUnavailable, encode_chunks, faust_send, group_by_partition
from streamapp.settings import load_settings
from tests.fixtures import config_text


def test_partition_matches_kafka_default_partitioner() -> None:
    partitions = list(range(8))
    for i in range(500):
        key = recipient_key("members", f"C{i}")
        assert partition_for(key, 8) == DefaultPartitioner()(key, partitions, partitions)


def test_grouping_keeps_order_per_recipient() -> None:
    commands = [UpsertRecipient(database="m", originalId=f"C{i % 50}", at=str(i)) for i in range(1000)] + [
        DeleteRecipient(database="m", originalId="C3")
    ]
    groups = group_by_partition(commands, 8)
    assert sum(len(g) for g in groups.values()) == len(commands)
    c3 = groups[partition_for(recipient_key("m", "C3"), 8)]
    c3_ats = [getattr(c, "at", "deleted") for c in c3 if c.originalId == "C3"]
    assert c3_ats == [str(i) for i in range(3, 1000, 50)] + ["deleted"]


def test_chunks_stay_under_the_event_size_limit() -> None:
    big = "x" * 2000
    commands = [
        UpsertRecipient(database="m", originalId=f"C{i}", at="t", attributes={"note": big}) for i in range(2500)
    ]
    chunks = encode_chunks(list(commands))
    assert all(len(c) <= 900_000 for c in chunks)
    decoded = [cmd for c in chunks for cmd in decode_batch(c).commands]
    assert [c.originalId for c in decoded] == [c.originalId for c in commands]


def test_vectorized_murmur2_matches_kafka_for_every_length_and_byte() -> None:
    import random

    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 70) for _ in range(20)]
    keys += [recipient_key("members", "Åsa-ünïcode-€"), b"", b"a"]
    for partitions in (1, 3, 8, 64):
        assert partitions_for(keys, partitions) == [partition_for(k, partitions) for k in keys]


def test_a_send_before_the_producer_started_is_kafka_unavailable(tmp_path: Path) -> None:
    """Faust raises NotReady then (a worker starting or stopping): the API turns KafkaUnavailable into a 503."""
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text("kafka://127.0.0.1:9", tmp_path / "data", 1, "publisher-test"))
    send = faust_send(new_faust_app(load_settings(config, environ={})))
    with pytest.raises(KafkaUnavailable, match="not ready"):
        asyncio.run(send("t-recipient-commands", b"{}", 0))  # type: ignore[arg-type]
