"""The Faust app: how it is configured, and what the rest of streamapp may ask of it.

`new_faust_app` builds a configured `faust.App`; `KafkaApp` wraps it with the few questions and
actions the domain services need (readiness, assignment, revocations, end offsets, crash,
priority pauses), so that no module outside `streamapp.kafka` reaches into Faust or aiokafka.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import Histogram

from streamapp import metrics
from streamapp.kafka import flow, security, transport
from streamapp.settings import Settings

log = logging.getLogger(__name__)

_faust_metrics: FaustMetrics | None = None

#: Called with the (topic, partition) pairs taken away from this worker by a rebalance.
RevokedCallback = Callable[[list[tuple[str, int]]], Awaitable[None]]


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
        # A worker that died (kill -9, lost host) holds its partitions until this expires, and
        # writes that need a partition's owner wait that long (streamapp.http.forwarding): 6 s,
        # the broker's minimum (group.min.session.timeout.ms), rather than Faust's 60 s. The
        # heartbeat runs in the consumer's own thread, so a busy event loop does not miss it.
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.5,
        # Records handed to the Conductor per fetch. Unlimited, one fetch of a large campaign
        # (up to 4 MB per partition, tens of thousands of messages) had to pass through the
        # streams before a transactional record fetched with it (docs/sending.md).
        "broker_max_poll_records": 100,
        # TLS and SASL from [service] kafka_* (streamapp.kafka.security); None: plaintext.
        "broker_credentials": security.faust_credentials(service.kafka),
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


#: Faust's latency histograms, observed in milliseconds, and the names they are exported under in seconds.
_MILLISECOND_HISTOGRAMS = {
    "events_runtime_latency": "streamapp_faust_events_runtime_seconds",
    "producer_send_latency": "streamapp_faust_producer_send_latency_seconds",
    "producer_error_send_latency": "streamapp_faust_producer_error_send_latency_seconds",
    "assign_latency": "streamapp_faust_assign_latency_seconds",
    "rebalance_done_consumer_latency": "streamapp_faust_rebalance_done_consumer_latency_seconds",
    "rebalance_done_latency": "streamapp_faust_rebalance_done_latency_seconds",
    "consumer_commit_latency": "streamapp_faust_consumer_commit_latency_seconds",
}
#: Faust series that are never set here (its web server is off; _Monitor drops the per-key table sensors).
_NEVER_SET = ("http_status_codes", "http_latency", "table_operations")
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _SecondsHistogram:
    """Takes Faust's millisecond observations, exports them in seconds (SPEC §7: base units)."""

    def __init__(self, name: str, documentation: str) -> None:
        self._histogram = Histogram(name, documentation, registry=metrics.registry, buckets=_SECONDS_BUCKETS)

    def observe(self, milliseconds: float) -> None:
        self._histogram.observe(milliseconds / 1000)


def _monitor() -> PrometheusMonitor:
    """Faust's own sensors, exported with our prefix on our /metrics (created once per process): latencies
    in seconds, and without the series nothing sets (`promtool check metrics` on a scrape finds nothing)."""
    global _faust_metrics
    if _faust_metrics is None:
        created = FaustMetrics.create(metrics.registry, "streamapp_faust")
        for name in (*_MILLISECOND_HISTOGRAMS, *_NEVER_SET):
            metrics.registry.unregister(getattr(created, name))
        seconds = {
            field: _SecondsHistogram(name, f"Faust's {field.replace('_', ' ')}, in seconds")
            for field, name in _MILLISECOND_HISTOGRAMS.items()
        }
        _faust_metrics = created._replace(**seconds)
    return _Monitor(metrics=_faust_metrics)


def new_faust_app(settings: Settings) -> faust.App:
    # env={}: Faust reads ~80 settings from the environment and lets them win over these (so
    # APP_WEB_ENABLED=true would start its web server with its table and router routes).
    app = faust.App(settings.service.id, env={}, **faust_settings(settings))
    transport.install(app)
    app.monitor = _monitor()
    return app


def source_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
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


class KafkaApp:
    """The Faust app as the domain services see it."""

    def __init__(self, app: faust.App) -> None:
        self.faust = app

    def is_ready(self) -> bool:
        """Serving: started, not rebalancing, tables recovered."""
        recovery = self.faust.tables.recovery
        return bool(recovery.completed.is_set() and not self.faust.rebalancing and not recovery.in_recovery)

    @property
    def should_stop(self) -> bool:
        return bool(self.faust.should_stop)

    async def crash(self, exc: BaseException) -> None:
        """Stop the worker: its partitions move to another, which redoes what was not committed."""
        await self.faust.crash(exc)

    def assigned(self, topic: str) -> set[int]:
        """The partitions of `topic` assigned to this worker now."""
        return {tp.partition for tp in self.faust.consumer.assignment() if tp.topic == topic}

    def on_revoked(self, callback: RevokedCallback) -> None:
        async def revoked(sender: Any, revoked: Iterable[Any], **kwargs: Any) -> None:
            await callback([(tp.topic, tp.partition) for tp in revoked])

        self.faust.on_partitions_revoked.connect(revoked)

    async def end_offsets(self, pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The broker's end offset of each (topic, partition): fresh, also for paused partitions."""
        tps = [TopicPartition(topic, partition) for topic, partition in pairs]
        if not tps:
            return {}
        ends: Mapping[Any, int] = await self.faust.consumer.highwaters(*tps)
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def pause_by_priority(self, topics: list[str], held: set[str], partitions: set[int]) -> None:
        """Pause `held` topics and every topic ranked after one with unread records (streamapp.kafka.flow)."""
        await flow.pause_by_priority(self.faust.consumer, topics, held, partitions)
