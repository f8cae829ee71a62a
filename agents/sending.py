"""Send agents: one per priority topic, each handing its events to the send engine.

The agents never await a send: `stream.noack()` leaves each event unacknowledged until the
engine recorded the message's outcome in the ledger (Faust commits only offsets whose events,
and all before them, were acked: at-least-once), and the engine's dispatcher decides the order
across priorities. An agent that blocked would fill its buffer and make Faust's Conductor stop
delivering to every topic, transactional included.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from streamapp import metrics
from streamapp.core.models import decode_send
from streamapp.runtime import Sending, StreamApp
from streamapp.sending.engine import SendEngine

log = logging.getLogger(__name__)


def register(sa: StreamApp, sending: Sending) -> None:
    """Attach one agent per priority topic to the app."""
    for priority, topic in sending.topics.items():
        _register_one(sa, sending.engine, priority, topic)


def _register_one(sa: StreamApp, engine: SendEngine, priority: str, topic: Any) -> None:
    async def send_messages(stream: Any) -> None:
        async for event in stream.noack().events():
            try:
                command = decode_send(event.value)
            except msgspec.DecodeError as exc:
                log.error("skipping undecodable message at %s: %s", event.message.tp, exc)
                metrics.MESSAGES.labels(priority=priority, outcome="invalid").inc()
                event.ack()
                continue
            engine.submit(event, command)

    sa.faust.agent(topic, name=f"send-{priority}")(send_messages)
