"""Apply recipient commands (upsert, delete, history, batch records) to the tables.

Commands arrive in batches, one Kafka event per partition chunk, and are
applied in order, so writes for one recipient keep the order the API or the
import produced them in. Each chunk is written with one RocksDB batch and one
changelog batch per table (see tables.bulk). A bad event or command is
logged, counted and skipped: it never stops the agent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from streamapp import metrics
from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    AppendHistory,
    BatchInfo,
    Command,
    DeleteRecipient,
    SoftBounce,
    SweepInactive,
    UpsertRecipient,
    decode_batch,
    decode_history,
    decode_recipient,
    encode,
)
from streamapp.core.rules import append_history, apply_upsert, sweep_inactive
from streamapp.kafka.gaps import OffsetTracker
from streamapp.kafka.store import PartitionChunk
from streamapp.sending.bounces import apply_soft_bounce

if TYPE_CHECKING:
    from streamapp.runtime import StreamApp

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Chunks:
    """The tables one event writes, for its partition."""

    recipients: PartitionChunk
    history: PartitionChunk
    batches: PartitionChunk

    async def flush(self, app: Any) -> None:
        for chunk in (self.recipients, self.history, self.batches):
            await chunk.flush(app)


def apply_command(chunks: Chunks, command: Command, seq: int) -> None:
    """Stage the effect of one command (at position `seq` of the partition) on the chunk's tables."""
    recipients, history = chunks.recipients, chunks.history
    if isinstance(command, SweepInactive):
        sweep(recipients, command, seq)
        return
    if isinstance(command, BatchInfo):
        chunks.batches.set(command.batchId.encode(), encode(command))
        return
    key = recipient_key(command.database, command.originalId)
    if isinstance(command, UpsertRecipient):
        raw = recipients.get(key)
        current = decode_recipient(raw) if raw is not None else None
        updated = apply_upsert(current, command, seq)
        if updated is not current:
            recipients.set(key, encode(updated))
    elif isinstance(command, SoftBounce):
        raw = recipients.get(key)
        bounced = apply_soft_bounce(decode_recipient(raw) if raw is not None else None, command, seq)
        if bounced is not None:
            recipients.set(key, encode(bounced))
    elif isinstance(command, DeleteRecipient):
        recipients.set(key, None)
        history.set(key, None)
    elif isinstance(command, AppendHistory):
        raw = history.get(key)
        records = decode_history(raw) if raw is not None else []
        history.set(key, encode(append_history(records, command.records)))


def sweep(recipients: PartitionChunk, command: SweepInactive, seq: int) -> None:
    for key, raw in list(recipients.scan(f"{command.database}/".encode())):
        swept = sweep_inactive(decode_recipient(raw), command.before, seq)
        if swept is not None:
            recipients.set(key, encode(swept))


#: Commands per event are far fewer (publisher.CHUNK), so offset * SEQ_STRIDE + index orders them.
SEQ_STRIDE = 4096


def apply_commands(chunks: Chunks, commands: list[Command], offset: int) -> int:
    """Stage every command of the event at `offset` in order; return how many failed (and were skipped)."""
    upserts = [c for c in commands if isinstance(c, UpsertRecipient)]
    chunks.recipients.prefetch([recipient_key(c.database, c.originalId) for c in upserts])
    failed = 0
    base = (offset + 1) * SEQ_STRIDE
    for index, command in enumerate(commands):
        try:
            apply_command(chunks, command, base + index)
        except Exception:
            log.exception("skipping command that failed to apply: %r", command)
            failed += 1
    return failed


async def _forget(offsets: OffsetTracker, revoked: Any) -> None:
    offsets.forget(tp.partition for tp in revoked)


def register(sa: StreamApp) -> None:
    """Attach the agent to the app."""

    offsets = OffsetTracker()
    sa.faust.on_partitions_revoked.connect(lambda sender, revoked, **kw: _forget(offsets, revoked))

    @sa.faust.agent(sa.recipient_commands, name="apply-recipient-commands")  # type: ignore[untyped-decorator]
    async def apply_recipient_commands(stream: Any) -> AsyncIterator[None]:
        async for event in stream.events():
            skipped = offsets.seen(event.message.tp, event.message.offset)
            if skipped is not None:  # watched, not yet seen here (docs/sending.md, "Skipped records")
                log.error("%s: offsets %d..%d skipped the agent", event.message.tp, skipped[0], skipped[1] - 1)
                metrics.COMMAND_RECORDS_SKIPPED.inc(skipped[1] - skipped[0])
            try:
                batch = decode_batch(event.value)
            except msgspec.DecodeError as exc:
                log.error("skipping undecodable command batch at %s: %s", event.message.tp, exc)
                metrics.COMMANDS.labels(outcome="invalid").inc()
                continue
            partition = event.message.partition
            chunks = Chunks(
                PartitionChunk(sa.recipients, partition),
                PartitionChunk(sa.history, partition),
                PartitionChunk(sa.batches, partition),
            )
            failed = apply_commands(chunks, batch.commands, event.message.offset)
            await chunks.flush(sa.faust)
            metrics.COMMANDS.labels(outcome="applied").inc(len(batch.commands) - failed)
            metrics.COMMANDS.labels(outcome="failed").inc(failed)
            yield None
