"""The segment definitions topic (SPEC §9): every worker reads all of it; a PUT waits for its own copy.

The topic has one partition and is compacted (`topics.segment_definitions_topic`, docs/segments.md),
so reading it from the beginning gives every worker the whole catalog, in one order. The reader is
a plain aiokafka consumer with no group (every worker must see every record, and there is nothing
to commit: a restart reads from the beginning again) and a short fetch wait, so a new record is
seen within about 100 ms. Each fetch goes to the domain's `apply` as one list of (key, value,
offset), in order; this module knows nothing of what the records mean.

The writer produces with acks from every replica, then waits until this worker's reader has
applied that offset, so a GET on the same worker right after a PUT already sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamapp.kafka.publisher import new_producer
from streamapp.kafka.security import client_options
from streamapp.kafka.topics import bootstrap_servers, segment_definitions_topic
from streamapp.settings import Settings

log = logging.getLogger(__name__)

#: One record as the domain gets it: key (b"" if none), value (None: a tombstone), offset.
Record = tuple[bytes, bytes | None, int]
#: Called with each fetch's records, in offset order (`SegmentCatalog.apply_all`).
Apply = Callable[[list[Record]], Any]

#: The fetch long-poll: how late at most a worker sees a record produced while it waited.
FETCH_WAIT_MS = 100
#: A failing fetch is retried after this long (the broker restarting, a leader moving).
RETRY_SECONDS = 1.0


class CatalogReader:
    """Applies every record of the definitions topic, from the beginning, in offset order."""

    def __init__(
        self, settings: Settings, apply: Apply, *, topic: str | None = None, start_seconds: float = 60.0
    ) -> None:
        self._settings = settings
        self._start_seconds = start_seconds
        self._apply = apply
        self._tp = TopicPartition(topic or segment_definitions_topic(settings), 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._position = 0  # every offset below it has been applied
        self._moved = asyncio.Event()

    @property
    def position(self) -> int:
        """The next offset to apply: every record below it has been applied."""
        return self._position

    async def start(self) -> None:
        """Read the topic up to its end as of now, then keep following it in the background.

        Returns once the catalog is complete, so a worker serves no segment before it knows them
        all; TimeoutError after `start_seconds`.
        """
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
            **client_options(self._settings),
        )
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
            async with asyncio.timeout(self._start_seconds):
                await self._catch_up(consumer)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._follow(consumer), name=f"catalog-reader {self._tp.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def wait_applied(self, offset: int) -> None:
        """Return once the record at `offset` (or a later one) has been applied (bound it with asyncio.timeout)."""
        while self._position <= offset:
            await self._moved.wait()

    async def _catch_up(self, consumer: AIOKafkaConsumer) -> None:
        end = await self._end_offset(consumer)
        while self._position < end:
            await self._poll(consumer, 1000)

    async def _end_offset(self, consumer: AIOKafkaConsumer) -> int:
        """The topic's end; retried while a topic just created has no leader yet."""
        while True:
            try:
                return int((await consumer.end_offsets([self._tp]))[self._tp])
            except Exception as exc:  # aiokafka raises several kinds while leaders are elected
                log.info("segment definitions topic not ready (%s); retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._poll(consumer, 1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the segment definitions topic failed; retrying")
                await asyncio.sleep(RETRY_SECONDS)

    async def _poll(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        batch = await consumer.getmany(self._tp, timeout_ms=timeout_ms)
        records = [(r.key or b"", r.value, r.offset) for r in batch.get(self._tp, [])]
        if records:
            self._apply_fetch(records)
            self._advance(records[-1][2] + 1)
        # Compaction and control records leave gaps in the offsets: the position is past them.
        self._advance(await consumer.position(self._tp))

    def _apply_fetch(self, records: list[Record]) -> None:
        try:
            self._apply(records)
        except Exception:  # a bad record must not stop the reader of every later one
            log.exception("segment definitions at offsets %d-%d could not be applied", records[0][2], records[-1][2])

    def _advance(self, position: int) -> None:
        if position > self._position:
            self._position = position
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()


class CatalogWriter:
    """Produces definition records and returns once this worker's reader has applied them."""

    def __init__(
        self, settings: Settings, reader: CatalogReader, *, topic: str | None = None, seconds: float = 10.0
    ) -> None:
        self._settings = settings
        self._seconds = seconds
        self._reader = reader
        self._topic = topic or segment_definitions_topic(settings)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = new_producer(self._settings, linger_ms=0)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def write(self, key: bytes, value: bytes | None) -> int:
        """Produce (None: a tombstone), await the ack of every replica and the local apply; the offset.

        TimeoutError if both take longer than `seconds`: the record may still be applied later.
        """
        if self._producer is None:
            raise RuntimeError("CatalogWriter.write before start")
        async with asyncio.timeout(self._seconds):
            ack = await self._producer.send(self._topic, value=value, key=key, partition=0)
            offset = int((await ack).offset)
            await self._reader.wait_applied(offset)
        return offset
