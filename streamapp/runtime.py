"""The typed runtime of one worker: its Faust app, topics, stores and optional sending part.

`create_runtime` builds everything from a Settings object (no module-level app), so the CLI, the
tests and several workers in one process each get their own. Agents are attached by
`streamapp.worker`, which sits above this layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import faust

from streamapp.core.models import PRIORITIES, Priority
from streamapp.kafka.app import KafkaApp, new_faust_app, source_topic
from streamapp.kafka.keyed import keyed_send
from streamapp.kafka.publisher import ACK_DEADLINE, CommandPublisher, faust_send
from streamapp.kafka.store import Store
from streamapp.kafka.topics import commands_topic, messages_topic
from streamapp.segments.catalog import UnknownDatabase
from streamapp.segments.engine import SegmentEngine, SegmentStores
from streamapp.sending.audience import Members
from streamapp.sending.engine import SendEngine, SendStores
from streamapp.settings import Settings
from streamapp.tables.batches import batches_table
from streamapp.tables.idempotency import idempotency_table
from streamapp.tables.messages import messages_table
from streamapp.tables.recipients import history_table, recipients_table
from streamapp.tables.segments import segments_table


@dataclass(frozen=True, slots=True)
class Sending:
    """What sending adds (SPEC §6): present when [smtp] is configured or `streamapp dev` runs its sink."""

    topics: Mapping[Priority, faust.TopicT]
    messages: Store
    idempotency: Store
    engine: SendEngine


@dataclass(frozen=True, slots=True)
class StreamApp:
    """One worker's Faust app and the streams and stores it owns."""

    settings: Settings
    kafka: KafkaApp
    recipient_commands: faust.TopicT
    recipients: Store
    history: Store
    batches: Store
    publisher: CommandPublisher
    sending: Sending | None
    #: Segment definitions, each held partition's memberships and timers (streamapp.segments.engine).
    segments: SegmentEngine

    @property
    def faust(self) -> faust.App:
        return self.kafka.faust

    def is_ready(self) -> bool:
        """Serving: started, not rebalancing, tables recovered."""
        return self.kafka.is_ready()


def create_runtime(settings: Settings) -> StreamApp:
    app = new_faust_app(settings)
    kafka = KafkaApp(app)
    partitions = settings.service.partitions
    # The API's writes answer 503 once Kafka is out for ACK_DEADLINE; the send engine's wait for it.
    publisher = CommandPublisher(faust_send(app), commands_topic(settings), partitions, deadline=ACK_DEADLINE)
    recipients = Store(app, recipients_table(app, partitions))
    history = Store(app, history_table(app, partitions))
    stores = SegmentStores(Store(app, segments_table(app, partitions)), recipients, history)
    # The timer's ticks wait for the broker like the send engine's writes (no deadline).
    ticks = CommandPublisher(faust_send(app), commands_topic(settings), partitions)
    segments = SegmentEngine(settings, kafka, stores, ticks, keyed_send(app))
    members = SegmentMembers(segments)
    return StreamApp(
        settings=settings,
        kafka=kafka,
        recipient_commands=source_topic(app, commands_topic(settings), partitions),
        recipients=recipients,
        history=history,
        batches=Store(app, batches_table(app, partitions)),
        publisher=publisher,
        sending=_sending(settings, kafka, recipients, history, members) if settings.smtp is not None else None,
        segments=segments,
    )


class SegmentMembers:
    """What audience sends ask of segments (streamapp.sending.audience.Members), from the segment engine:
    the members kept per recipient in each partition this worker holds, configured and API segments alike."""

    def __init__(self, engine: SegmentEngine) -> None:
        self.engine = engine

    def exists(self, database: str, segment: str) -> bool:
        try:
            return any(entry.name == segment for entry in self.engine.catalog.segments(database))
        except UnknownDatabase:
            return False

    async def members(self, partition: int, database: str, segment: str) -> list[str] | None:
        """None while the partition is loading here or the segment is building in it."""
        part = self.engine.loaded(partition)
        if part is None or part.count(database, segment) is None:
            return None
        return part.members(database, segment)


def _sending(settings: Settings, kafka: KafkaApp, recipients: Store, history: Store, members: Members) -> Sending:
    """Priority topics, the message ledger, idempotency keys and the send engine (docs/sending.md)."""
    app, partitions = kafka.faust, settings.service.partitions
    publisher = CommandPublisher(faust_send(app), commands_topic(settings), partitions)
    messages = Store(app, messages_table(app, partitions))
    engine = SendEngine(settings, kafka, SendStores(recipients, history, messages), publisher, members)
    return Sending(
        topics={p: source_topic(app, messages_topic(settings, p), partitions) for p in PRIORITIES},
        messages=messages,
        idempotency=Store(app, idempotency_table(app, partitions)),
        engine=engine,
    )
