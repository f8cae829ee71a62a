"""Consumer lag as the broker sees it (SPEC §7 `streamapp_consumer_lag_records{topic,partition}`).

Faust's own gauges (end offset and committed offset per partition) are kept by the worker that
owns a partition: they stop moving while the partition is paused (its end offset is refreshed by
fetches only), and vanish with a dead worker, which is exactly when the lag matters. Here every
worker asks the broker, every LAG_INTERVAL seconds, for the group's committed offsets
(OffsetFetch) and the end offset of every partition of the topics the group consumes
(ListOffsets), like seglo/kafka-lag-exporter does from outside:

- `streamapp_consumer_lag_records` = end offset - committed offset, clamped at 0; a partition
  with no committed offset yet counts from its log start offset (everything in it is unread);
- `streamapp_consumer_lag_seconds` = how long ago the oldest unread record was produced, estimated
  from the end offsets seen so far (kafka-lag-exporter's interpolation over a table of (time, end
  offset) samples): 0 with nothing unread; the age of the oldest sample when the record is older
  than every sample (a lower bound, right after a start).

Every worker exports the lag of every partition, owned or not, so the figure survives the owner:
a dashboard takes `max by (topic, partition)` over workers.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from mode import Service

from streamapp import metrics
from streamapp.kafka.security import client_options
from streamapp.kafka.topics import bootstrap_servers
from streamapp.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between two reads of the broker's offsets.
LAG_INTERVAL = 5.0
#: End-offset samples kept per partition for the time estimate: an hour at LAG_INTERVAL.
SAMPLES = 720


@dataclass
class EndOffsetHistory:
    """(time, end offset) samples of one partition, oldest first; end offsets never decrease."""

    times: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    ends: deque[int] = field(default_factory=lambda: deque(maxlen=SAMPLES))

    def add(self, at: float, end: int) -> None:
        if self.ends and end < self.ends[-1]:  # the topic was recreated: the old samples mean nothing
            self.times.clear()
            self.ends.clear()
        self.times.append(at)
        self.ends.append(end)

    def produced_at(self, offset: int) -> float | None:
        """When the record at `offset` was produced, interpolated between the samples around it; None
        when it is older than every sample."""
        ends = list(self.ends)
        index = bisect.bisect_right(ends, offset)  # the first sample whose end offset is past `offset`
        if index == 0 or index == len(ends):
            return None if index == 0 else self.times[-1]
        before_end, after_end = ends[index - 1], ends[index]
        before_at, after_at = self.times[index - 1], self.times[index]
        return before_at + (after_at - before_at) * (offset - before_end) / (after_end - before_end)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    records: int
    seconds: float


def partition_lag(
    tp: tuple[str, int], end: int, committed: int | None, start: int, history: EndOffsetHistory, now: float
) -> PartitionLag:
    """The lag of one partition from the broker's offsets (`committed` None: the group never committed)."""
    position = committed if committed is not None and committed >= 0 else start
    records = max(end - position, 0)
    if records == 0:
        return PartitionLag(tp[0], tp[1], 0, 0.0)
    produced = history.produced_at(position)
    oldest = history.times[0] if history.times else now
    return PartitionLag(tp[0], tp[1], records, max(now - (produced if produced is not None else oldest), 0.0))


class LagReader:
    """Reads the offsets of `group` on `topics` from the broker (an admin client and a group-less consumer)."""

    def __init__(self, settings: Settings, group: str, topics: Iterable[str]) -> None:
        self.settings = settings
        self.group = group
        self.topics = sorted(set(topics))
        self.histories: dict[tuple[str, int], EndOffsetHistory] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers(self.settings),
            **client_options(self.settings),
        }
        self._admin = AIOKafkaAdminClient(**options)
        self._consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **options)
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
        self._admin = self._consumer = None

    async def read(self) -> list[PartitionLag]:
        """Every partition's lag now; new end-offset samples are recorded for the time estimate."""
        assert self._admin is not None and self._consumer is not None, "start() first"
        tps = [TopicPartition(topic, p) for topic in self.topics for p in sorted(await self._partitions(topic))]
        if not tps:
            return []
        committed_raw = await self._admin.list_consumer_group_offsets(self.group, partitions=tps)
        committed = {tp: meta.offset for tp, meta in committed_raw.items()}
        ends = await self._consumer.end_offsets(tps)
        starts = await self._consumer.beginning_offsets(tps)
        now = time.time()
        lags = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            history = self.histories.setdefault(key, EndOffsetHistory())
            history.add(now, ends[tp])
            lags.append(partition_lag(key, ends[tp], committed.get(tp), starts[tp], history, now))
        return lags

    async def _partitions(self, topic: str) -> set[int]:
        """The topic's partitions (an admin metadata request: a group-less consumer knows no topic)."""
        assert self._admin is not None
        return {p["partition"] for d in await self._admin.describe_topics([topic]) for p in d["partitions"]}


class LagReporter(Service):  # type: ignore[misc]
    """Exports the group's lag on `topics` every LAG_INTERVAL seconds, for as long as the worker runs."""

    def __init__(self, settings: Settings, topics: Iterable[str], interval: float = LAG_INTERVAL, **kwargs: Any):
        super().__init__(**kwargs)
        self.reader = LagReader(settings, settings.service.id, topics)
        self.interval = interval

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def on_stop(self) -> None:
        await self.reader.close()

    async def _run(self) -> None:
        started = False
        while not self.should_stop:
            try:
                if not started:
                    await self.reader.start()
                    started = True
                export(await self.reader.read())
            except (KafkaError, OSError) as exc:  # the broker is away: keep the last figures, try again
                log.warning("consumer lag not read: %s", exc)
            except Exception:
                log.exception("consumer lag not read")
            await asyncio.sleep(self.interval)


def export(lags: list[PartitionLag]) -> None:
    for lag in lags:
        labels = {"topic": lag.topic, "partition": str(lag.partition)}
        metrics.CONSUMER_LAG_RECORDS.labels(**labels).set(lag.records)
        metrics.CONSUMER_LAG_SECONDS.labels(**labels).set(lag.seconds)
