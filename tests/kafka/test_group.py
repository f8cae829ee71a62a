"""The consumer group read from the broker alone (streamapp.kafka.group): members, URLs, partitions."""

from __future__ import annotations

import asyncio

import pytest

from streamapp.kafka.group import describe_group
from streamapp.kafka.topics import commands_topic
from streamapp.settings import load_settings
from tests.fixtures import WorkerPool, eventually

pytestmark = pytest.mark.integration


def test_the_broker_says_which_worker_owns_which_partition(workers: WorkerPool) -> None:
    first, second = workers.create(), workers.create()
    settings = load_settings(first.config, {})
    topic = commands_topic(settings)

    def settled() -> bool:
        group = asyncio.run(describe_group(settings))
        return group.state == "Stable" and len(group.members) == 2 and all(m.actives for m in group.members)

    eventually(settled, timeout=60)
    group = asyncio.run(describe_group(settings))
    assert {m.url for m in group.members} == {first.url, second.url}
    owned = [set(m.actives.get(topic, [])) for m in group.members]
    assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(range(settings.service.partitions))


def test_a_group_nobody_joined_has_no_members(workers: WorkerPool) -> None:
    worker = workers.create(start=False)
    group = asyncio.run(describe_group(load_settings(worker.config, {})))
    assert group.members == [] and group.state in ("Dead", "Empty")
