"""One worker assembled: the runtime, its agents, the HTTP server, the drop watcher, the send engine.

This is the only module that sees every layer at once (docs/architecture.md, "Module map"): the
CLI runs it, tests and benchmarks build it.
"""

from __future__ import annotations

import logging
from typing import get_args

import faust
from mode import Service

import streamapp
from streamapp import metrics
from streamapp.agents import recipients as recipient_agents
from streamapp.agents import sending as sending_agents
from streamapp.core.models import PRIORITIES, MessageStatus
from streamapp.http.server import ApiServer
from streamapp.imports.report import Outcome as FileOutcome
from streamapp.kafka.lag import LagReporter
from streamapp.kafka.publisher import faust_send
from streamapp.kafka.topics import TopicError, commands_topic, ensure_topics_sync, messages_topics
from streamapp.mail.smtp import ReplyClass
from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.runtime import StreamApp, create_runtime
from streamapp.sending.reports import BounceListener
from streamapp.sending.retention import RetentionStores, RetentionSweeper
from streamapp.settings import Settings

log = logging.getLogger(__name__)


def assemble(settings: Settings) -> StreamApp:
    """The runtime with every agent attached (nothing started yet)."""
    sa = create_runtime(settings)
    recipient_agents.register(sa)
    if sa.sending is not None:
        sending_agents.register(sa, sa.sending)
    return sa


#: Outcomes of streamapp_ingest_rows_total, the same for every source.
INGEST_OUTCOMES = ("accepted", "rejected")
#: Outcomes of streamapp_recipient_commands_total (agents/recipients.py, recipients/apply.py).
COMMAND_OUTCOMES = ("applied", "failed", "invalid", "oversize")


def export_known_series(sa: StreamApp) -> None:
    """Every label combination that can be known at start-up, at 0 (SPEC §7), so that `increase()` sees the
    first event (a series born at 1 has no increase), plus streamapp_ready and streamapp_build_info."""
    settings = sa.settings
    metrics.BUILD_INFO.labels(version=streamapp.__version__).set(1)
    metrics.READY.set_function(lambda: _ready(sa))
    for name in settings.databases:
        sources = ["api", *(f"file:{i.name}" for i in settings.imports if i.database == name)]
        for source in sources:
            for outcome in INGEST_OUTCOMES:
                metrics.INGEST_ROWS.labels(database=name, source=source, outcome=outcome)
    for imported in settings.imports:
        for file_outcome in get_args(FileOutcome):
            metrics.FILES.labels(imported.name, file_outcome)
    for command_outcome in COMMAND_OUTCOMES:
        metrics.COMMANDS.labels(outcome=command_outcome)
    if sa.sending is None:
        return
    for priority in PRIORITIES:
        for status in (*get_args(MessageStatus), "invalid"):
            metrics.MESSAGES.labels(priority=priority, outcome=status)
        for state in metrics.QUEUE_STATES:
            metrics.QUEUE_DEPTH.labels(priority, state)
        metrics.OLDEST_QUEUED_AGE.labels(priority)
    for kind in metrics.BOUNCE_KINDS:
        for source in metrics.BOUNCE_SOURCES:
            metrics.BOUNCES.labels(kind, source)
    for reply_class in get_args(ReplyClass):
        metrics.SMTP_REPLIES.labels(reply_class)


def _ready(sa: StreamApp) -> float:
    try:
        return 1.0 if sa.kafka.is_ready() else 0.0
    except Exception:  # a scrape while the app starts or stops: not serving, and /metrics still answers
        return 0.0


def services(sa: StreamApp, dev_sink: bool = False) -> list[Service]:
    """The services that run beside the Faust app in one worker."""
    settings = sa.settings
    consumed = [commands_topic(settings), *(messages_topics(settings) if sa.sending is not None else [])]
    running: list[Service] = [sa.segments, ApiServer(sa), LagReporter(settings, consumed)]
    if settings.imports or settings.triggers or settings.campaigns:
        from streamapp.imports.watcher import DropWatcher

        running.append(DropWatcher(settings))
    if sa.sending is not None:
        running.append(sa.sending.engine)
        if settings.bounces.listen is not None:
            running.append(BounceListener(settings, unsubscribe_keys(settings), faust_send(sa.faust)))
        stores = RetentionStores(sa.sending.engine.ledger, sa.batches, sa.sending.idempotency)
        running.append(RetentionSweeper(settings, sa.kafka, stores))
    if dev_sink:
        from streamapp.devtools.devsink import DevSink

        running.append(DevSink(settings))
    return running


def run_worker(settings: Settings, loglevel: str = "info", dev_sink: bool = False) -> int:
    """Run one worker (Faust app + API) until SIGINT/SIGTERM."""
    settings.service.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        ensure_topics_sync(settings)
    except TopicError as exc:
        log.error("%s", exc)
        return 2
    sa = assemble(settings)
    export_known_series(sa)
    worker = faust.Worker(sa.faust, *services(sa, dev_sink), loglevel=loglevel, override_logging=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
