"""Applying recipient commands to a partition's stores (SPEC §3), in order.

A Kafka event carries the commands of one partition chunk; they are staged on one
PartitionTransaction per table and written with one RocksDB batch and one changelog batch per
table (streamapp.kafka.store). A command that fails to apply is logged, counted and skipped: it
never stops the agent.

`seq` orders commands: offset * SEQ_STRIDE + index in the event, so a replayed older upsert can
never undo a newer one (docs/architecture.md, "Delivery guarantees").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    AppendHistory,
    BatchInfo,
    Command,
    DeleteRecipient,
    SoftBounce,
    SweepInactive,
    UpsertRecipient,
    decode_history,
    decode_recipient,
    encode,
)
from streamapp.core.rules import append_history, apply_soft_bounce, apply_upsert, sweep_inactive
from streamapp.kafka.store import PartitionTransaction, Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Chunks:
    """The tables one event writes, for its partition."""

    recipients: PartitionTransaction
    history: PartitionTransaction
    batches: PartitionTransaction

    @classmethod
    def open(cls, recipients: Store, history: Store, batches: Store, partition: int) -> Chunks:
        return cls(recipients.transaction(partition), history.transaction(partition), batches.transaction(partition))

    async def flush(self) -> None:
        for chunk in (self.recipients, self.history, self.batches):
            await chunk.flush()


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


def sweep(recipients: PartitionTransaction, command: SweepInactive, seq: int) -> None:
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
