"""Audience sends (SPEC §9): a campaign to a segment's active members as of its `sendTime`, each once.

- **Accepted** (`publish_audience`): one audience command per ledger partition (a SendMessage whose
  `audience` names the segment, on the campaign topic, to that partition), then the BatchInfo (with
  its `segment`, no total yet): the 202 comes once Kafka acknowledged all of them.
- **Registered** (`Audiences.register`): the engine stores the command as the partition's job row
  `~a<batchId>`, a ledger bookkeeping row: durable in the ledger's changelog, it survives restarts
  and moves with its partition. A command of a batch already cancelled there is stored as done.
- **Evaluated** (`Audiences.evaluate`) once `sendTime` has come, by the partition's owner: the members
  of the segment in this partition now (`Members`, the one thing asked of segments), the active ones
  (the recipient row, local), each written as a `scheduled` ledger row due now, so the schedule
  releases it like any scheduled message. In slices, in originalId order: each slice's rows, then the
  job's `cursor` (last originalId) and `rows`. The changelog keeps that order, so after a crash the
  job's cursor never runs ahead of its rows; the rows of a slice written after the cursor are found
  (the batch's row numbers from `rows` on) and their recipients skipped, so nobody gets two.
  Message ids are the batch's (`batch_message_id`), the row numbered within the partition.
- **Counted** (`progress`): a partition's job says whether it is done and how many rows it wrote; the
  batch's total is their sum once every partition is done (`null` until then, SPEC §4).

A cancel (streamapp.sending.cancel) before the evaluation leaves the job done with no rows; during it,
the evaluation stops at the next slice and the rows written are cancelled like any batch's.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from streamapp.core import clock
from streamapp.core.ids import batch_message_id, batch_prefix
from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    BatchInfo,
    MessageState,
    SendMessage,
    decode_recipient,
    decode_state,
    encode,
)
from streamapp.kafka.publisher import Send
from streamapp.kafka.store import Store
from streamapp.sending.cancel import BatchCancels, marker_key
from streamapp.sending.ledger import Ledger

log = logging.getLogger(__name__)

#: Key prefix of the job rows (a ledger bookkeeping row).
AUDIENCE = b"~a"
#: Members written per slice (one group commit of ledger rows, then the job row).
SLICE = 500
#: The row number of an audience command's own id (never a member's).
COMMAND_ROW = 0xFFFFFFFF
#: How long an evaluation waits for members that cannot be told yet (a segment building).
WAIT_SECONDS = 0.5


class Members(Protocol):
    """What audience sends need of segments: the members of one segment in one partition, now."""

    def exists(self, database: str, segment: str) -> bool:
        """Whether the database has the segment (an unknown one is a 404)."""
        ...

    async def members(self, partition: int, database: str, segment: str) -> Sequence[str] | None:
        """The segment's member originalIds in `partition` (held by this worker), sorted; None while they
        cannot be told yet (the segment is building here, the partition loading). Never holds the loop long."""
        ...


class AudienceJob(msgspec.Struct, omit_defaults=True):
    """A partition's part of an audience send: what each member's message gets, and how far it got."""

    command: SendMessage
    rows: int = 0
    cursor: str | None = None
    done: bool = False


_job = msgspec.msgpack.Decoder(AudienceJob)


def job_key(batch_id: str) -> bytes:
    return AUDIENCE + batch_id.encode()


def progress(store: Store, partition: int, batch_id: str) -> tuple[bool, int]:
    """(evaluated here, rows written here) of a batch's audience job in a partition of the ledger."""
    raw = store.get(partition, job_key(batch_id))
    if raw is None:  # not registered yet, unless it was cancelled here first
        return store.get(partition, marker_key(batch_id)) is not None, 0
    job = _job.decode(raw)
    return job.done, job.rows


async def publish_audience(send: Send, topic: str, partitions: int, message: SendMessage) -> None:
    """One audience command to every partition of the campaign topic; returns once Kafka has all of them."""
    pending = []
    for partition in range(partitions):
        assert message.batchId is not None
        message_id = batch_message_id(partition, message.batchId, COMMAND_ROW)
        pending.append(await send(topic, encode(msgspec.structs.replace(message, messageId=message_id)), partition))
    await asyncio.gather(*pending)


def audience_command(info: BatchInfo, template: str, properties: dict[str, Any]) -> SendMessage:
    """The command an audience batch sends each partition (its messageId is set per partition)."""
    assert info.segment is not None
    return SendMessage(
        messageId="", database=info.database, originalId="", priority=info.priority, template=template,
        name=info.name, properties=properties, batchId=info.batchId, notBefore=info.sendTime,
        enqueuedAt=info.createdAt, audience=info.segment,
    )  # fmt: skip


class Audiences:
    """The audience jobs of the partitions this worker's send engine owns (see the module)."""

    def __init__(
        self,
        ledger: Ledger,
        recipients: Store,
        members: Members,
        cancels: BatchCancels,
        scheduled: Callable[[MessageState, int], None],
        id_key: bytes,
    ) -> None:
        self.ledger = ledger
        self.recipients = recipients
        self.members = members
        self.cancels = cancels
        self.scheduled = scheduled
        self.id_key = id_key
        self._running: set[tuple[int, str]] = set()

    async def register(self, partition: int, command: SendMessage) -> None:
        """Store the partition's job (once: a command read again finds it)."""
        batch_id = command.batchId
        if batch_id is None or command.audience is None:
            log.error("audience command %s without a batch or a segment: ignored", command.messageId)
            return
        await self.ledger.prepare(partition)  # a rebuild of old bookkeeping would drop a job written before it
        if self.ledger.store.get(partition, job_key(batch_id)) is None:
            job = AudienceJob(command=command, done=self.cancels.cancelled(partition, batch_id))
            await self.ledger.writer.write(partition, {job_key(batch_id): encode(job)})

    def take_due(self, partition: int, now: datetime) -> list[str]:
        """Batch ids of the partition's jobs whose time has come, not done, not being evaluated: each is marked
        as being evaluated now (the caller runs `evaluate` for it)."""
        found = []
        for key, raw in self.ledger.store.items(partition, AUDIENCE):
            job, batch_id = _job.decode(raw), key[len(AUDIENCE) :].decode()
            send_time = job.command.notBefore
            due = send_time is None or clock.parse_time(send_time) <= now
            if due and not job.done and (partition, batch_id) not in self._running:
                found.append(batch_id)
                self._running.add((partition, batch_id))
        return found

    def uses(self, partitions: Iterable[int], database: str, segment: str) -> bool:
        """Whether a job of these partitions not yet evaluated, nor cancelled, sends to the segment (its DELETE
        is then a 409)."""
        for partition in partitions:
            for key, raw in self.ledger.store.items(partition, AUDIENCE):
                job, batch_id = _job.decode(raw), key[len(AUDIENCE) :].decode()
                if job.done or (job.command.database, job.command.audience) != (database, segment):
                    continue
                if not self.cancels.cancelled(partition, batch_id):
                    return True
        return False

    async def evaluate(self, partition: int, batch_id: str, owns: Callable[[int], bool]) -> None:
        """Write the members' rows of one job, a slice at a time, until done, cancelled or moved away."""
        try:
            await self._evaluate(partition, batch_id, owns)
        except Exception:
            log.exception("audience send %s stopped in partition %d", batch_id, partition)
        finally:
            self._running.discard((partition, batch_id))

    async def _evaluate(self, partition: int, batch_id: str, owns: Callable[[int], bool]) -> None:
        job = self._job(partition, batch_id)
        if job is None or job.done:
            return
        command = job.command
        members = await self.members.members(partition, command.database, command.audience or "")
        while members is None and owns(partition):
            await asyncio.sleep(WAIT_SECONDS)
            members = await self.members.members(partition, command.database, command.audience or "")
        written, row = self._written(partition, batch_id, job.rows)
        start = bisect.bisect_right(members, job.cursor) if members and job.cursor is not None else 0
        pending = list(members or ())[start:]
        while owns(partition):
            if self.cancels.cancelled(partition, batch_id) or not pending:
                job = msgspec.structs.replace(job, rows=row, done=True)
                await self.ledger.writer.write(partition, {job_key(batch_id): encode(job)})
                log.info("audience send %s: %d message(s) in partition %d", batch_id, row, partition)
                return
            chunk, pending = pending[:SLICE], pending[SLICE:]
            states = self._states(partition, job.command, [m for m in chunk if m not in written], row)
            await asyncio.gather(*(self.ledger.put(partition, state) for state in states))
            for state in states:
                self.scheduled(state, partition)
            row += len(states)
            job = msgspec.structs.replace(job, rows=row, cursor=chunk[-1])
            await self.ledger.writer.write(partition, {job_key(batch_id): encode(job)})

    def _job(self, partition: int, batch_id: str) -> AudienceJob | None:
        raw = self.ledger.store.get(partition, job_key(batch_id))
        return _job.decode(raw) if raw is not None else None

    def _written(self, partition: int, batch_id: str, rows: int) -> tuple[set[str], int]:
        """Recipients of rows numbered from `rows` on (a slice written after the job's cursor), and the next
        free row number."""
        prefix = batch_prefix(partition, batch_id)
        found, row = set(), rows
        for key, raw in self.ledger.store.items(partition, prefix, start=prefix + f"{rows:08x}".encode()):
            found.add(decode_state(raw).originalId)
            row = max(row, int(key[len(prefix) : len(prefix) + 8], 16) + 1)
        return found, row

    def _states(self, partition: int, command: SendMessage, members: Iterable[str], row: int) -> list[MessageState]:
        """A `scheduled` row due now for each active member, numbered from `row`."""
        now = clock.now_iso()
        database, batch_id = command.database, command.batchId or ""
        states = []
        for original_id in members:
            raw = self.recipients.get(partition, recipient_key(database, original_id))
            if raw is None or decode_recipient(raw).status != "active":
                continue
            message_id = batch_message_id(partition, batch_id, row, self.id_key, database, command.priority)
            message = msgspec.structs.replace(
                command, messageId=message_id, originalId=original_id, audience=None, notBefore=None, enqueuedAt=now
            )
            states.append(MessageState(
                messageId=message_id, database=database, originalId=original_id, priority=command.priority,
                status="scheduled", createdAt=now, updatedAt=now, nextAttemptAt=now, batchId=batch_id,
                command=message,
            ))  # fmt: skip
            row += 1
        return states
