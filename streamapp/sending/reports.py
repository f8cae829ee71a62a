"""What comes back after the relay's 250 (SPEC §11): bounce reports and complaints, applied to the
message's ledger row and to its recipient.

A report reaches any worker (the return-path listener, later the provider webhooks); the message's
ledger row, and its recipient, live with the partition the message id names, on its owner. So the
worker that read the report publishes a `BounceNotice` for that partition on the transactional
topic (as a SendMessage that is no e-mail, like an audience command) and answers the reporting MTA
only once Kafka has it; the partition's send engine applies it (`ReportEffects`):

| report    | ledger row                      | recipient                | history             |
|-----------|---------------------------------|--------------------------|---------------------|
| hard      | `bounced` (it was `sent`)       | `bounced`                | `mail.bounced`      |
| soft      | unchanged                       | one more soft bounce     | `mail.bounced`      |
| complaint | unchanged                       | `unsubscribed`           | `mail.complained`   |

Each kind marks the row (`bounced`, `soft_bounced`, `complained`), so a report read twice (an MTA
that retries, a replayed record) changes nothing the second time; the marks are counted in the
batch's and campaign's bookkeeping like opens and clicks (streamapp.sending.ledger).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
from mode import Service

from streamapp import metrics
from streamapp.core import clock
from streamapp.core.engagement import EngagementType, engagement
from streamapp.core.ids import partition_of
from streamapp.core.models import BounceNotice, MessageState, RecipientCommand, SendMessage, SoftBounce, UpsertRecipient
from streamapp.core.models import encode as encode_model
from streamapp.kafka.publisher import Send
from streamapp.kafka.topics import messages_topic
from streamapp.mail.bounce_listener import ListenerHandle, ReturnPath, start_listener
from streamapp.mail.bounces import Report
from streamapp.sending.ledger import Ledger
from streamapp.settings import KeyRing, Settings

log = logging.getLogger(__name__)

#: The mark each kind leaves on the ledger row (MessageState.engaged).
MARKS = {"hard": "bounced", "soft": "soft_bounced", "complaint": "complained"}

Publish = Callable[[list[RecipientCommand]], Awaitable[None]]


def notice_command(message_id: str, notice: BounceNotice) -> SendMessage:
    """The record that carries a report to the owner of the message's partition."""
    return SendMessage(messageId=message_id, database="", originalId="", priority="transactional", template="",
                       enqueuedAt=notice.at, report=notice)  # fmt: skip


async def publish_notices(send: Send, settings: Settings, notices: Iterable[tuple[str, BounceNotice]]) -> int:
    """Publish each (message id, notice) to the message's partition, skipping ids that name none; returns the
    number published, once Kafka acknowledged them all."""
    topic = messages_topic(settings, "transactional")
    acks = []
    for message_id, notice in notices:
        partition = partition_of(message_id)
        if partition is not None and partition < settings.service.partitions:
            acks.append(await send(topic, encode_model(notice_command(message_id, notice)), partition))
    for ack in acks:
        await ack
    return len(acks)


def report_effects(state: MessageState, notice: BounceNotice) -> tuple[MessageState, list[RecipientCommand]] | None:
    """The row after the report and the recipient's commands; None when the row has this kind already (or
    belongs to an erased recipient)."""
    mark = MARKS[notice.kind]
    if mark in state.engaged or not state.originalId:
        return None
    database, original_id, at = state.database, state.originalId, notice.at
    row = msgspec.structs.replace(state, engaged=[*state.engaged, mark], updatedAt=at)
    commands: list[RecipientCommand]
    if notice.kind == "hard":
        if state.status == "sent":
            row = msgspec.structs.replace(row, status="bounced", reason=notice.reason or "bounce report")
        commands = [UpsertRecipient(database=database, originalId=original_id, at=at, status="bounced", ifExists=True)]
    elif notice.kind == "soft":
        commands = [SoftBounce(database=database, originalId=original_id, at=at, action="inc")]
    else:
        commands = [
            UpsertRecipient(database=database, originalId=original_id, at=at, status="unsubscribed", ifExists=True)
        ]
    history: EngagementType = "mail.complained" if notice.kind == "complaint" else "mail.bounced"
    commands.append(engagement(history, database=database, original_id=original_id, message_id=state.messageId,
                               name=state.name, at=at))  # fmt: skip
    return row, commands


class ReportEffects:
    """Applies the notices of the partitions this worker's send engine owns.

    The engine applies each notice as it arrives, beside the others, so two notices about one message (an
    MTA that retried, a soft then a hard bounce) would both read the row before either wrote it: notices
    about the same message take turns (`_turns`, a lock per message id while any of its notices is open).
    """

    def __init__(self, ledger: Ledger, publish: Publish) -> None:
        self.ledger = ledger
        self.publish = publish
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    async def apply(self, partition: int, command: SendMessage) -> None:
        key = command.messageId
        lock, users = self._turns.get(key, (asyncio.Lock(), 0))
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                await self._apply(partition, command)
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def _apply(self, partition: int, command: SendMessage) -> None:
        """Recipient commands first, then the row: a crash in between applies the report again (the
        commands are idempotent), never loses it."""
        notice = command.report
        assert notice is not None
        state = self.ledger.get(partition, command.messageId)
        if state is None:
            log.info("%s report for message %s, which the ledger no longer has", notice.kind, command.messageId)
            return
        effects = report_effects(state, notice)
        if effects is None:
            return
        row, commands = effects
        await self.publish(commands)
        await self.ledger.put(partition, row)
        metrics.BOUNCES.labels(notice.kind, notice.source).inc()


class BounceListener(Service):  # type: ignore[misc]
    """`[bounces] listen`: the return path's inbound SMTP server; every report it reads becomes a notice."""

    def __init__(self, settings: Settings, ring: KeyRing, send: Send, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        bounces = settings.bounces
        assert bounces.domain is not None and bounces.listen is not None
        self.settings = settings
        self.path = ReturnPath(bounces.local, bounces.domain, ring)
        self.host, self.port = bounces.listen
        self.send = send
        self.handle: ListenerHandle | None = None

    async def on_start(self) -> None:
        self.handle = await start_listener(self.host, self.port, self.path, self.deliver, self.junk)
        log.info("bounce listener on %s:%d for %s", self.host, self.handle.port, self.path.domain)

    async def on_stop(self) -> None:
        if self.handle is not None:
            await self.handle.close()

    async def deliver(self, message_ids: list[str], report: Report) -> None:
        """Publish a notice per message the report's addresses name; returns once Kafka has them all (the
        listener answers 250 then, 451 if this raises, so the reporting MTA tries again)."""
        notice = BounceNotice(kind=report.kind, source="dsn", at=clock.iso(datetime.now(UTC)), reason=report.reason)
        await publish_notices(self.send, self.settings, [(m, notice) for m in dict.fromkeys(message_ids)])

    @staticmethod
    def junk() -> None:
        metrics.BOUNCE_JUNK.inc()
