"""Segments in a worker (SPEC §9): the catalog, each held partition's state, the timer, change events.

**One writer per partition.** A partition's segment state is written only by the recipient-commands
agent, in the event that wrote the recipient rows it follows (`after_event`), and flushed with them.
Work that no event brings, a flip falling due ("bought in the last 30 days" on day 31) or the next
slice of a build, is asked for by the timer here: it publishes a `SegmentTick` to that partition of
the commands topic, and the agent does the work when it reads the tick. Why not a timer task that
writes itself: it would be a second writer of the partition, racing the agent's staged rows and
still writing after a rebalance gave the partition to another worker. Through the topic, the work
is ordered with the partition's commands, done by whoever owns the partition when it is read,
committed like any command, and replayed after a crash (a replayed tick only re-does what is due).
Not Faust windowed tables or timers: a due time is a field of the stored state, so a worker that
takes a partition over (a rebalance, a kill -9) reloads every pending flip from the recovered table
(`PartitionSegments.load`) and fires it at its time; none is lost, and none fires early, since a
flip found not due is only rescheduled.

At most one tick per partition is outstanding (until the agent read it, or TICK_PATIENCE passed:
a tick lost in a rebalance is sent again), so a backlog of due flips costs one tick per FLIP_SLICE
of them, not one per recipient.

**Change events** (streamapp.segments.events) are published, and acknowledged, before the event's
state is written: a crash in between publishes them again rather than never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mode import Service

from streamapp import metrics
from streamapp.core.clock import now_iso
from streamapp.core.keys import recipient_key
from streamapp.core.models import SegmentTick
from streamapp.kafka.app import KafkaApp
from streamapp.kafka.catalog_topic import CatalogReader, CatalogWriter
from streamapp.kafka.keyed import KeyedSend
from streamapp.kafka.publisher import CommandPublisher
from streamapp.kafka.store import PartitionTransaction, Store
from streamapp.kafka.topics import commands_topic, segment_changes_topic
from streamapp.segments.catalog import CatalogChange, SegmentCatalog, SegmentEntry
from streamapp.segments.events import SegmentChange, encode_change
from streamapp.segments.partition import PartitionSegments
from streamapp.settings import Settings

__all__ = ["SegmentEngine", "SegmentStores"]

log = logging.getLogger(__name__)

#: A tick not read by then (lost in a rebalance, or the agent far behind) is sent again.
TICK_PATIENCE = 5.0
#: The timer looks at least this often for new partitions, builds and due flips.
TIMER_PERIOD = 0.5
GAUGE_PERIOD = 1.0


@dataclass(frozen=True, slots=True)
class SegmentStores:
    segments: Store
    recipients: Store
    history: Store


class SegmentEngine(Service):  # type: ignore[misc]
    """The catalog (configuration + definitions topic) and the segment state of the partitions held."""

    def __init__(
        self,
        settings: Settings,
        kafka: KafkaApp,
        stores: SegmentStores,
        publisher: CommandPublisher,
        send: KeyedSend,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.kafka = kafka
        self.stores = stores
        self.catalog = SegmentCatalog(settings)
        self.reader = CatalogReader(settings, self.catalog.apply_all)
        self.writer = CatalogWriter(settings, self.reader)
        self._publisher = publisher
        self._send = send
        self._tz = settings.service.zone
        self._commands = commands_topic(settings)
        self._changes = segment_changes_topic(settings)
        self._parts: dict[int, PartitionSegments] = {}
        self._loading: dict[int, asyncio.Future[PartitionSegments]] = {}
        self._generation: dict[int, int] = {}
        self._ticked: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._catalog_ready = asyncio.Event()
        self._gauged: set[tuple[str, str]] = set()
        self.catalog.subscribe(self._on_catalog)

    # -- lifecycle -----------------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.reader.start()
        self._catalog_ready.set()
        await self.writer.start()
        self.kafka.on_revoked(self._on_revoked)
        self.add_future(self._timer())
        self.add_future(self._gauges())

    async def on_stop(self) -> None:
        await self.writer.stop()
        await self.reader.stop()

    # -- partitions ----------------------------------------------------------------------------

    def loaded(self, partition: int) -> PartitionSegments | None:
        """The partition's state if this worker holds it and has loaded it."""
        return self._parts.get(partition)

    async def partition(self, partition: int) -> PartitionSegments:
        """The partition's state, loaded first if needed (after the catalog is complete)."""
        part = self._parts.get(partition)
        if part is not None:
            return part
        loading = self._loading.get(partition)
        if loading is None:
            loading = self._loading[partition] = asyncio.ensure_future(self._load(partition))
        return await asyncio.shield(loading)

    async def _load(self, partition: int) -> PartitionSegments:
        generation = self._generation.get(partition, 0)
        try:
            await self._catalog_ready.wait()
            started = time.perf_counter()
            part = await PartitionSegments.load(partition, self._entries(), self.stores.segments, self._tz)
        finally:
            self._loading.pop(partition, None)
        for database, entries in self._entries().items():  # the catalog may have changed meanwhile
            part.redefine(database, entries)
        if self._generation.get(partition, 0) == generation:
            self._parts[partition] = part
            log.info("segments[%d] loaded in %.2f s", partition, time.perf_counter() - started)
        self._wake.set()
        return part

    def _entries(self) -> dict[str, list[SegmentEntry]]:
        return {database: self.catalog.segments(database) for database in self.settings.databases}

    async def _on_revoked(self, revoked: list[tuple[str, int]]) -> None:
        self.drop(partition for topic, partition in revoked if topic == self._commands)

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions taken away (their state stays in the table for the next owner)."""
        for partition in partitions:
            self._generation[partition] = self._generation.get(partition, 0) + 1
            self._parts.pop(partition, None)
            self._ticked.pop(partition, None)

    def _on_catalog(self, changes: list[CatalogChange]) -> None:
        for database in sorted({change.database for change in changes}):
            entries = self.catalog.segments(database)
            for part in self._parts.values():
                part.redefine(database, entries)
        self._wake.set()

    # -- the agent's step ----------------------------------------------------------------------

    async def after_event(
        self,
        part: PartitionSegments,
        recipients: PartitionTransaction,
        history: PartitionTransaction,
        touched: Iterable[bytes],
        replayed: Iterable[bytes] = (),
        tick: bool = False,
    ) -> PartitionTransaction:
        """Re-evaluate what the event wrote (and, on a tick, fire due flips and feed a build slice);
        publish the changes and await their acks; return the staged segments transaction to flush."""
        now = datetime.now(UTC)
        changes = part.evaluate(recipients, history, touched, now)
        if tick:
            self._ticked.pop(part.partition, None)
            changes += part.advance(recipients, history, now, metrics.TIMER_LATENESS.observe)
            part.build_step(self.stores.recipients, self.stores.history, now)
        states = self.stores.segments.transaction(part.partition)
        part.stage(states, replayed)
        await self._publish(part.partition, changes)
        self._wake.set()
        return states

    async def _publish(self, partition: int, changes: list[SegmentChange]) -> None:
        if not changes:
            return
        pending: list[Awaitable[Any]] = []
        for change in changes:
            key = recipient_key(change.database, change.originalId)
            pending.append(await self._send(self._changes, key, encode_change(change), partition))
        await asyncio.gather(*pending)
        for change in changes:
            metrics.SEGMENT_CHANGES.labels(database=change.database).inc()

    # -- the timer -----------------------------------------------------------------------------

    async def _timer(self) -> None:
        while not self.should_stop:
            self._wake.clear()
            delay = TIMER_PERIOD
            try:
                delay = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("segment timer pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _pass(self) -> float:
        """Load newly held partitions, tick those with work due; seconds until the next due flip."""
        if not self.kafka.is_ready():
            return 0.2
        assigned = self.kafka.assigned(self._commands)
        self.drop([p for p in self._parts if p not in assigned])
        for partition in assigned - self._parts.keys() - self._loading.keys():
            self._background(self.partition(partition), f"loading segments[{partition}]")
        now = datetime.now(UTC)
        delay = TIMER_PERIOD
        for partition, part in list(self._parts.items()):
            due = part.next_due()
            if part.building or (due is not None and due <= now):
                await self._tick(partition)
            elif due is not None:
                delay = min(delay, (due - now).total_seconds())
        return max(delay, 0.002)

    async def _tick(self, partition: int) -> None:
        sent = self._ticked.get(partition)
        if sent is not None and time.monotonic() - sent < TICK_PATIENCE:
            return
        self._ticked[partition] = time.monotonic()
        await self._publisher.publish_to(SegmentTick(at=now_iso()), partition)

    def _background(self, work: Awaitable[Any], what: str) -> None:
        def done(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.error("%s failed: %r", what, future.exception())

        asyncio.ensure_future(work).add_done_callback(done)

    # -- reads ---------------------------------------------------------------------------------

    def local_counts(self) -> dict[tuple[str, str], int]:
        """(database, segment) -> members in the partitions loaded here, of segments ready in all of them."""
        total: dict[tuple[str, str], int] = {}
        building: set[tuple[str, str]] = set()
        for part in self._parts.values():
            for key, count in part.counts().items():
                if count is None:
                    building.add(key)
                else:
                    total[key] = total.get(key, 0) + count
        return {key: count for key, count in total.items() if key not in building}

    async def _gauges(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(GAUGE_PERIOD)
            self.update_gauges()

    def update_gauges(self) -> None:
        counts = self.local_counts()
        for database, segment in self._gauged - counts.keys():
            with contextlib.suppress(KeyError):
                metrics.SEGMENT_MEMBERS.remove(database, segment)
        for (database, segment), count in counts.items():
            metrics.SEGMENT_MEMBERS.labels(database=database, segment=segment).set(count)
        self._gauged = set(counts)
