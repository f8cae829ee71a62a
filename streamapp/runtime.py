"""The Faust app: topics, tables and agents wired from the settings.

`create_app` builds everything from a Settings object (no module-level app),
so the CLI, the tests and several workers in one process each get their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

from streamapp import metrics
from streamapp.agents import recipients as recipient_agents
from streamapp.kafka import transport
from streamapp.kafka.publisher import CommandPublisher, faust_send
from streamapp.kafka.topics import commands_topic
from streamapp.settings import Settings
from streamapp.tables.batches import batches_table
from streamapp.tables.recipients import history_table, recipients_table

log = logging.getLogger(__name__)

_faust_metrics: FaustMetrics | None = None


@dataclass
class StreamApp:
    """One Faust app and the streams and tables it owns."""

    settings: Settings
    faust: faust.App
    recipient_commands: Any
    recipients: Any
    history: Any
    batches: Any
    #: Sending (streamapp.sending): set when [smtp] is configured or `streamapp dev` runs its sink.
    messages: Any = None
    message_topics: Any = None
    idempotency: Any = None
    sending: Any = None

    @property
    def publisher(self) -> CommandPublisher:
        return CommandPublisher(
            faust_send(self.faust.producer), commands_topic(self.settings), self.settings.service.partitions
        )

    def is_ready(self) -> bool:
        """Serving: started, not rebalancing, tables recovered."""
        app = self.faust
        recovery = app.tables.recovery
        return recovery.completed.is_set() and not app.rebalancing and not recovery.in_recovery


def faust_settings(settings: Settings) -> dict[str, Any]:
    service = settings.service
    return {
        "broker": service.broker if "://" in service.broker else f"kafka://{service.broker}",
        "store": "rocksdb://",
        "datadir": str(service.data_dir / "state"),
        "topic_partitions": service.partitions,
        "topic_replication_factor": service.replication_factor,
        "producer_acks": -1,
        # Chunked table writes send many records per partition at once.
        "producer_max_batch_size": 512 * 1024,
        # Our own aiohttp server serves the API; Faust's web (with routes that
        # expose tables and the router) is not started at all.
        "web_enabled": False,
        "canonical_url": service.advertised_url,
        "stream_wait_empty": False,
        # A worker that died (kill -9, lost host) holds its partitions until
        # this expires: 10 s rather than Faust's 60 s keeps failover short.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 2.0,
        # Records handed to the Conductor per fetch. Unlimited, one fetch of a large campaign
        # (up to 4 MB per partition, tens of thousands of messages) had to pass through the
        # streams before a transactional record fetched with it (docs/sending.md).
        "broker_max_poll_records": 100,
    }


class _Monitor(PrometheusMonitor):  # type: ignore[misc]
    """Faust's Prometheus sensors without the per-key table ones.

    A labelled counter update per table read and write cost 13% of a bulk
    upsert's CPU; rows are counted per chunk in streamapp_recipient_commands.
    """

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_table_del(self, table: Any, key: Any) -> None:
        pass


def _monitor() -> PrometheusMonitor:
    """Faust's own sensors, exported with our prefix on our /metrics (created once per process)."""
    global _faust_metrics
    if _faust_metrics is None:
        _faust_metrics = FaustMetrics.create(metrics.registry, "streamapp_faust")
    return _Monitor(metrics=_faust_metrics)


def source_topic(app: faust.App, name: str, partitions: int) -> Any:
    """A topic of raw MessagePack events, created by us before the worker subscribes (topics.py)."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=True,
    )


def create_app(settings: Settings) -> StreamApp:
    app = faust.App(settings.service.id, **faust_settings(settings))
    transport.install(app)
    app.monitor = _monitor()
    partitions = settings.service.partitions
    commands = source_topic(app, commands_topic(settings), partitions)
    sa = StreamApp(
        settings=settings,
        faust=app,
        recipient_commands=commands,
        recipients=recipients_table(app, partitions),
        history=history_table(app, partitions),
        batches=batches_table(app, partitions),
    )
    recipient_agents.register(sa)
    if settings.smtp is not None:
        _add_sending(sa)
    return sa


def _add_sending(sa: StreamApp) -> None:
    """Priority topics, the message ledger, the send engine and its agents (docs/sending.md)."""
    from streamapp.agents import sending as sending_agents
    from streamapp.core.ids import messages_topic
    from streamapp.core.models import PRIORITIES
    from streamapp.sending.engine import SendEngine
    from streamapp.tables.idempotency import idempotency_table
    from streamapp.tables.messages import messages_table

    partitions = sa.settings.service.partitions
    sa.message_topics = {p: source_topic(sa.faust, messages_topic(sa.settings, p), partitions) for p in PRIORITIES}
    sa.messages = messages_table(sa.faust, partitions)
    sa.idempotency = idempotency_table(sa.faust, partitions)
    sa.sending = SendEngine(sa)
    sending_agents.register(sa, sa.sending, sa.message_topics)
