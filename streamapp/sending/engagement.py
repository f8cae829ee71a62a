"""Publishing the engagement history of sent messages in bulk (SPEC §8: `mail.sent`).

Every sent message has a history record to publish, on the recipient-commands topic. Published
one message at a time it cost the worker about 40 % more CPU per message (bench/send.py: one
Kafka event, one RocksDB batch and one changelog batch of the agent per message) and the sender
task a round trip. Here the sender hands the record over with its message's Kafka event and goes
on: the records of every message sent within LINGER_SECONDS go out in one publish (a few events
per partition), and only once Kafka acknowledged them are the messages' events acked, so their
offsets are committed after their records are in Kafka, never before.

A crash before that leaves the events uncommitted: they are read again, find their ledger row
`sent` and publish the same record again (streamapp.sending.pipeline), which the agent takes once
(the id is derived from the messageId). A failed publish is retried after RETRY_SECONDS, the
events still held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from streamapp.core.models import RecipientCommand

log = logging.getLogger(__name__)

Publish = Callable[[list[RecipientCommand]], Awaitable[None]]

#: How long a record waits for others to go out with it: the records of a few hundred messages.
LINGER_SECONDS = 0.05
#: Records that go out at once, without waiting for the linger (bounds a publish and the memory held).
MAX_RECORDS = 5000
RETRY_SECONDS = 1.0


class Ackable(Protocol):
    """A consumed Kafka event (Faust's Event): acked once its message's outcome is recorded."""

    def ack(self) -> object: ...


class EngagementPublisher:
    """`add(commands, event)`: publish soon, with others; then ack `event`."""

    def __init__(
        self,
        publish: Publish,
        linger: float = LINGER_SECONDS,
        max_records: int = MAX_RECORDS,
        retry: float = RETRY_SECONDS,
    ) -> None:
        self._publish = publish
        self._linger = linger
        self._max_records = max_records
        self._retry = retry
        self._waiting: list[tuple[list[RecipientCommand], Ackable | None]] = []
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def add(self, commands: list[RecipientCommand], event: Ackable | None) -> None:
        self._waiting.append((commands, event))
        self._count += len(commands)
        if self._count >= self._max_records:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._waiting, self._count = self._waiting, [], 0
        if group:
            task = asyncio.create_task(self._send(group))
            self._running.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._running.discard)

    async def _send(self, group: list[tuple[list[RecipientCommand], Ackable | None]]) -> None:
        try:
            await self._publish([command for commands, _ in group for command in commands])
        except Exception:
            log.exception("engagement history of %d message(s) not published: retrying", len(group))
            await asyncio.sleep(self._retry)
            for commands, event in group:
                self.add(commands, event)
            return
        for _, event in group:
            if event is not None:
                event.ack()
