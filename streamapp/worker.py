"""One worker assembled: the runtime, its agents, the HTTP server, the drop watcher, the send engine.

This is the only module that sees every layer at once (docs/architecture.md, "Module map"): the
CLI runs it, tests and benchmarks build it.
"""

from __future__ import annotations

import logging

import faust
from mode import Service

from streamapp.agents import recipients as recipient_agents
from streamapp.agents import sending as sending_agents
from streamapp.http.server import ApiServer
from streamapp.kafka.lag import LagReporter
from streamapp.kafka.topics import TopicError, commands_topic, ensure_topics_sync, messages_topics
from streamapp.runtime import StreamApp, create_runtime
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


def services(sa: StreamApp, dev_sink: bool = False) -> list[Service]:
    """The services that run beside the Faust app in one worker."""
    settings = sa.settings
    consumed = [commands_topic(settings), *(messages_topics(settings) if sa.sending is not None else [])]
    running: list[Service] = [ApiServer(sa), LagReporter(settings, consumed)]
    if settings.imports or settings.triggers or settings.campaigns:
        from streamapp.imports.watcher import DropWatcher

        running.append(DropWatcher(settings))
    if sa.sending is not None:
        running.append(sa.sending.engine)
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
    worker = faust.Worker(sa.faust, *services(sa, dev_sink), loglevel=loglevel, override_logging=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
