"""The consumer's commit rule: only acknowledged offsets, from where the partition was sought.

The real consumer of a worker's Faust app (not started: the rule is bookkeeping). Each case also
shows what Faust's own rule commits, which is how records were lost (streamapp.kafka.transport).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from streamapp.kafka.app import new_faust_app
from streamapp.kafka.transport import Consumer, seekable
from streamapp.settings import load_settings
from tests.fixtures import config_text

PARTITION = TP("t-recipient-commands", 0)


@pytest.fixture
def consumer(tmp_path: Path) -> Consumer:
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text("kafka://127.0.0.1:9", tmp_path / "data", 1, "transport-test"))
    found = new_faust_app(load_settings(config, environ={})).consumer
    assert isinstance(found, Consumer)
    return found


def stand(consumer: Consumer, committed: int | None, first: int | None, acked: Iterable[int]) -> None:
    """Put `consumer` where a partition was sought to `committed`, read from `first`, and `acked` was processed."""
    consumer._committed_offset[PARTITION] = committed
    if first is not None:
        consumer._first[PARTITION] = first
    consumer._acked[PARTITION] = list(acked)
    consumer._acked_index[PARTITION] = set(acked)


def faust_rule(consumer: Consumer) -> Any:
    return FaustConsumer._new_offset(consumer, PARTITION)


def test_a_run_of_acknowledged_offsets_is_committed_and_forgotten(consumer: Consumer) -> None:
    stand(consumer, committed=10, first=10, acked=[12, 10, 11, 14])
    assert consumer._new_offset(PARTITION) == 13
    assert consumer._acked[PARTITION] == [14] and consumer._acked_index[PARTITION] == {14}
    assert consumer._new_offset(PARTITION) is None  # 13 is still being processed


def test_a_hole_at_the_committed_offset_is_not_committed_past(consumer: Consumer) -> None:
    stand(consumer, committed=10, first=10, acked=[11, 12])
    assert faust_rule(consumer) == 13  # Faust: offset 10, never processed, is committed past
    stand(consumer, committed=10, first=10, acked=[11, 12])
    assert consumer._new_offset(PARTITION) is None


def test_an_inferred_gap_is_not_committed_past(consumer: Consumer) -> None:
    """A seek in the middle of a fetched batch resets the read offset; Faust takes the jump for missing offsets."""
    stand(consumer, committed=10, first=10, acked=[10, 13, 14])
    consumer._gap[PARTITION].addi(11, 14)
    assert faust_rule(consumer) == 14  # Faust: 11 and 12, never processed, are committed past
    stand(consumer, committed=10, first=10, acked=[10, 13, 14])
    consumer._gap[PARTITION].addi(11, 14)
    assert consumer._new_offset(PARTITION) == 11


def test_offsets_the_log_no_longer_has_are_passed(consumer: Consumer) -> None:
    stand(consumer, committed=5, first=10, acked=[10, 11])  # retention removed 5..9: the fetch began at 10
    assert consumer._new_offset(PARTITION) == 12


def test_nothing_is_committed_before_the_partition_was_sought_or_read(consumer: Consumer) -> None:
    stand(consumer, committed=None, first=None, acked=[3, 4])  # late acknowledgements after a revocation
    assert consumer._new_offset(PARTITION) is None
    stand(consumer, committed=None, first=0, acked=[0, 1])  # a partition never committed, read from its start
    assert consumer._new_offset(PARTITION) == 2


def test_recovery_seeks_only_to_offsets_aiokafka_accepts() -> None:
    changelog = [TopicPartition("t-recipients-changelog", p) for p in range(4)]
    asked = {changelog[0]: 120, changelog[1]: -1, changelog[2]: -2, changelog[3]: None}
    fixed = seekable(asked)
    assert fixed == {changelog[0]: 120, changelog[1]: 0, changelog[2]: 0, changelog[3]: 0}

    async def seek_all() -> None:  # aiokafka's own checks, on a consumer that is never started
        client = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
        client.assign(changelog)
        try:
            with pytest.raises(ValueError, match="Offset must be a positive integer"):
                client.seek(changelog[2], -2)  # what Faust's recovery asked for, and what crashed a worker
        finally:
            await client.stop()

    asyncio.run(seek_all())
