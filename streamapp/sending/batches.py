"""Batch sends: rows that update their recipients, then each get one message.

Used by the batch routes (trigger batches at `batch` priority, campaign sends at `campaign`
priority) and by the `triggers/` and `campaigns/` drop folders. For each chunk of rows the
upserts go to the recipient-commands topic and the messages to the priority topic, each to the
recipient's partition; the message carries the row's values (`SendMessage.attributes`) so it
renders them even if it is read before its upsert is applied. Once every message is
acknowledged, the batch's BatchInfo is published: from then on `GET /api/v1/batches/{id}`
knows the total and counts the outcomes from the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from streamapp.core import clock
from streamapp.core.ids import batch_message_id, batch_partition, new_batch_id
from streamapp.core.keys import partitions_for, recipient_key
from streamapp.core.models import BatchInfo, Priority, RowError, SendMessage, UpsertRecipient, encode
from streamapp.kafka.publisher import AckWindow, CommandPublisher, Send
from streamapp.kafka.topics import commands_topic, messages_topic
from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.sending.batch_rows import RowChunk, RowRules
from streamapp.settings import CampaignSettings, DeclaredProperty, Settings, TriggerSettings
from streamapp.tabular.csvreader import FileRejected

#: Row errors listed in a batch's status (the count is always complete), and their length.
MAX_ERRORS = 1000
MAX_REASON = 300
MAX_IGNORED_COLUMNS = 100
#: Chunks whose acknowledgements may be outstanding (bounds memory).
MAX_CHUNKS_IN_FLIGHT = 3


@dataclass(frozen=True)
class SendTarget:
    """What each row of a batch gets: a trigger's or a campaign's template, at a priority."""

    kind: Literal["trigger", "campaign"]
    name: str
    database: str
    template: str
    transactional: bool
    priority: Priority
    #: The properties the trigger or campaign declares (SPEC §2); None: any.
    properties: Mapping[str, DeclaredProperty] | None = None

    @classmethod
    def trigger(cls, trigger: TriggerSettings, priority: Priority = "batch") -> SendTarget:
        return cls("trigger", trigger.name, trigger.database, trigger.template, trigger.transactional, priority,
                   trigger.properties)  # fmt: skip

    @classmethod
    def campaign(cls, campaign: CampaignSettings) -> SendTarget:
        return cls("campaign", campaign.name, campaign.database, campaign.template, False, "campaign",
                   campaign.properties)  # fmt: skip

    @property
    def rules(self) -> RowRules:
        """What each row's properties are checked against (streamapp.sending.batch_rows)."""
        return RowRules(self.properties, f"{self.kind} {self.name!r}")


class BatchSender:
    """Publishes one batch: rows in, one message per good row, then the BatchInfo."""

    def __init__(
        self,
        settings: Settings,
        target: SendTarget,
        send: Send,
        *,
        source: str,
        send_time: str | None = None,
        batch_id: str | None = None,
        created_at: str | None = None,
    ) -> None:
        self.target = target
        self.send = send
        self.partitions = settings.service.partitions
        self.publisher = CommandPublisher(send, commands_topic(settings), self.partitions)
        self.topic = messages_topic(settings, target.priority)
        self.batch_id = batch_id or new_batch_id(random.randrange(self.partitions))
        self.id_key = unsubscribe_keys(settings).signing  # tags its message ids (streamapp.core.ids)
        self.info = BatchInfo(
            batchId=self.batch_id, database=target.database, kind=target.kind, name=target.name,
            priority=target.priority, source=source, total=0, sendTime=send_time,
            createdAt=created_at or clock.now_iso(),
        )  # fmt: skip

    def reject(self, errors: list[RowError]) -> None:
        """Count bad rows; list the first MAX_ERRORS, reasons cut to MAX_REASON (the BatchInfo is
        one Kafka record)."""
        info = self.info
        info.rejected += len(errors)
        room = max(0, MAX_ERRORS - len(info.errors))
        for error in errors[:room]:
            if len(error.reason) > MAX_REASON:
                error.reason = error.reason[: MAX_REASON - 1] + "…"
            info.errors.append(error)
        info.errorsNotListed += max(0, len(errors) - room)

    async def add(self, chunk: RowChunk) -> list[Awaitable[Any]]:
        """Queue the chunk's upserts, then its messages; the awaitables resolve on Kafka's acks."""
        self.reject(chunk.rejected)
        if chunk.ignored and not self.info.ignoredColumns:
            self.info.ignoredColumns = [c[:MAX_REASON] for c in chunk.ignored[:MAX_IGNORED_COLUMNS]]
        pending = await self.publisher.enqueue(chunk.upserts)
        keys = [recipient_key(u.database, u.originalId) for u in chunk.upserts]
        for upsert, properties, partition in zip(
            chunk.upserts, chunk.properties, partitions_for(keys, self.partitions), strict=True
        ):
            message = self._message(upsert, properties, int(partition))
            pending.append(await self.send(self.topic, encode(message), int(partition)))
        return pending

    def _message(self, upsert: UpsertRecipient, properties: dict[str, Any], partition: int) -> SendMessage:
        target, info = self.target, self.info
        row = info.total
        info.total += 1
        email = upsert.email if isinstance(upsert.email, str) else None
        attributes = upsert.attributes if upsert.attributes is not msgspec.UNSET else None
        message_id = batch_message_id(partition, self.batch_id, row, self.id_key, target.database, target.priority)
        return SendMessage(
            messageId=message_id, database=target.database,
            originalId=upsert.originalId, priority=target.priority, template=target.template, name=target.name,
            transactional=target.transactional, properties=properties, email=email, attributes=attributes,
            batchId=self.batch_id, notBefore=info.sendTime, upserted=True, enqueuedAt=info.createdAt,
        )  # fmt: skip

    async def finish(self) -> BatchInfo:
        """Publish the BatchInfo (after every message was acknowledged) and return it."""
        partition = batch_partition(self.batch_id)
        assert partition is not None
        await self.publisher.publish_to(self.info, partition)
        return self.info


class NothingAccepted(Exception):
    """The body could not be read before its first row: nothing was sent, no batch exists."""


class BatchInterrupted(Exception):
    """Publishing stopped after some rows (Kafka unreachable, worker stopping): those rows' messages
    may go out. The BatchInfo says so when it could still be published."""

    def __init__(self, batch_id: str, rows: int, cause: BaseException) -> None:
        super().__init__(f"batch {batch_id} stopped after {rows} row(s) were read: {cause!r}")
        self.batch_id = batch_id


async def send_rows(
    sender: BatchSender, chunks: Iterator[RowChunk], between_chunks: Callable[[], None] = lambda: None
) -> BatchInfo:
    """Read chunks (in a thread: parsing is CPU work) and publish them; then finish the batch.

    `between_chunks` may raise to stop (the import job does when its worker died).

    A body that turns unreadable after some rows were sent (a JSON syntax error halfway) keeps
    those rows: the batch is finished with the reason as its last error. Before any row was
    read, NothingAccepted is raised instead.
    """
    in_flight = AckWindow(MAX_CHUNKS_IN_FLIGHT)
    read = 0
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            between_chunks()
            read += len(chunk)
            await in_flight.add(await sender.add(chunk))
    except FileRejected as exc:
        if read == 0:
            raise NothingAccepted(str(exc)) from None
        sender.reject([RowError(reason=f"{exc}; the rest of the body was not read")])
    except Exception as exc:
        if read:
            await _finish_interrupted(sender, in_flight, exc)
            raise BatchInterrupted(sender.batch_id, read, exc) from exc
        raise
    await in_flight.drain()
    if read == 0:
        raise NothingAccepted("no rows")
    return await sender.finish()


async def _finish_interrupted(sender: BatchSender, in_flight: AckWindow, exc: Exception) -> None:
    """Best effort: record what was published, so the messages that go out have a batch status."""
    sender.reject([RowError(reason=f"the batch stopped here: {exc!r}; later rows were not read")])
    with contextlib.suppress(Exception):
        await in_flight.drain(return_exceptions=True)
        await sender.finish()
