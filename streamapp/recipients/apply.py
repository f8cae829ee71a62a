"""Applying recipient commands to a partition's stores (SPEC §3), in order.

A Kafka event carries the commands of one partition chunk; they are staged on one
PartitionTransaction per table and written with one RocksDB batch and one changelog batch per
table (streamapp.kafka.store). A command that fails to apply is logged, counted and skipped: it
never stops the agent.

A command that would make a row larger than SPEC §3 allows (MAX_RECORD_BYTES, MAX_ATTRIBUTES) is
skipped the same way and counted as `oversize`: the doors refuse what they can see, but only here
is the merged row known (two upserts of 300 KiB each are fine alone). Without this, a row the
changelog cannot take crashed the worker, and the replayed command crashed it again on every
restart. The store refuses anything beyond the changelog's limit too (RecordTooLarge), as a last
line of defence, before RocksDB is written.

`seq` orders commands: offset * SEQ_STRIDE + index in the event, so a replayed older upsert can
never undo a newer one (docs/architecture.md, "Delivery guarantees").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from streamapp import metrics
from streamapp.core import clock
from streamapp.core.engagement import named
from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    AppendHistory,
    BatchInfo,
    Command,
    DeleteRecipient,
    EraseIdempotency,
    HistoryRecord,
    Recipient,
    SegmentTick,
    SoftBounce,
    SweepInactive,
    UpsertRecipient,
    decode_history,
    decode_idempotency,
    decode_recipient,
    encode,
)
from streamapp.core.rules import append_history, apply_soft_bounce, fit_history, sweep_inactive, upsert_or_skip
from streamapp.core.validation import MAX_ATTRIBUTES, MAX_HISTORY_RECORD_BYTES, MAX_RECORD_BYTES
from streamapp.kafka.store import PartitionTransaction, RecordTooLarge, Store
from streamapp.tables.idempotency import SCRUB, erased_key, index_prefix, indexed_record

log = logging.getLogger(__name__)

#: The outcome of a command skipped for its size (streamapp_recipient_commands_total{outcome}); created at
#: import so the series exists (at 0) before the first one, for rate() and alerts.
OVERSIZE = "oversize"
_oversize = metrics.COMMANDS.labels(outcome=OVERSIZE)


class Oversize(Exception):
    """The command would make a row larger than SPEC §3 allows; it is skipped, the row stays as it was."""


@dataclass(slots=True)
class Chunks:
    """The tables one event writes, for its partition; `idempotency` only where the worker sends (the
    ledger and the idempotency table exist only there)."""

    recipients: PartitionTransaction
    history: PartitionTransaction
    batches: PartitionTransaction
    idempotency: PartitionTransaction | None = None
    #: Recipients a command of this event left as they were (a replay after a crash, or a no-op): their
    #: segment state is written again, as their row is (`reassert`).
    replayed: set[bytes] = field(default_factory=set)

    def touched(self) -> set[bytes]:
        """Keys of the recipients whose row or history this event wrote (segments re-evaluate them)."""
        return {k for k in (*self.recipients.pending, *self.history.pending) if not k.startswith(b"\x00")}

    @classmethod
    def open(
        cls, recipients: Store, history: Store, batches: Store, partition: int, idempotency: Store | None = None
    ) -> Chunks:
        return cls(
            recipients.transaction(partition),
            history.transaction(partition),
            batches.transaction(partition),
            idempotency.transaction(partition) if idempotency is not None else None,
        )

    async def flush(self) -> None:
        for chunk in (self.recipients, self.history, self.batches, self.idempotency):
            if chunk is not None:
                await chunk.flush()


def apply_command(chunks: Chunks, command: Command, seq: int) -> None:
    """Stage the effect of one command (at position `seq` of the partition) on the chunk's tables.

    Oversize (or the store's RecordTooLarge) when the command would make a row too large: nothing of it
    is staged.
    """
    recipients, history = chunks.recipients, chunks.history
    if isinstance(command, SegmentTick):
        return  # segment work of the partition: the agent does it after the event's commands
    if isinstance(command, SweepInactive):
        sweep(recipients, command, seq)
        return
    if isinstance(command, BatchInfo):
        chunks.batches.set(command.batchId.encode(), encode(command))
        return
    if isinstance(command, EraseIdempotency):
        if chunks.idempotency is not None:
            erase_idempotency(chunks.idempotency, command)
        return
    key = recipient_key(command.database, command.originalId)
    if isinstance(command, UpsertRecipient):
        raw = recipients.get(key)
        current = decode_recipient(raw) if raw is not None else None
        updated = upsert_or_skip(current, command, seq)
        if updated is not None and updated is not current:
            recipients.set(key, encode_row(updated, current, len(raw or b""), command))
        elif reassert(recipients, key, raw, current, seq):
            chunks.replayed.add(key)
    elif isinstance(command, SoftBounce):
        raw = recipients.get(key)
        current = decode_recipient(raw) if raw is not None else None
        bounced = apply_soft_bounce(current, command, seq)
        if bounced is not None:
            recipients.set(key, encode(bounced))
        elif reassert(recipients, key, raw, current, seq):
            chunks.replayed.add(key)
    elif isinstance(command, DeleteRecipient):
        recipients.set(key, None)
        history.set(key, None)
        if chunks.idempotency is not None:  # the recipient's ledger rows are scrubbed (streamapp.sending.retention)
            now = clock.now_iso().encode()
            chunks.idempotency.set(erased_key(key), now)
            chunks.idempotency.set(SCRUB, now)
    elif isinstance(command, AppendHistory):
        if command.ifExists and recipients.get(key) is None:
            return  # engagement of an erased (or never created) recipient: no history comes back
        raw = history.get(key)
        data = encode_history(decode_history(raw) if raw is not None else [], command)
        history.set(key, data)
        if data == raw:  # nothing new: replayed (the segment state is written again too)
            chunks.replayed.add(key)


def reassert(
    recipients: PartitionTransaction, key: bytes, raw: bytes | None, current: Recipient | None, seq: int
) -> bool:
    """A replayed command (at or before the row's `seq`) writes its row again, unchanged.

    The store writes RocksDB before the changelog (streamapp.kafka.store): a worker killed in
    between keeps rows the changelog never got, and the command, not committed, is read again
    after the restart. Skipping it as already applied left those rows on that worker's disk only,
    lost for whichever worker recovers the partition next (the 20-minute chaos run found 2,000).
    Writing them again costs a changelog record per replayed command, i.e. only after a crash.
    """
    if raw is not None and current is not None and seq and current.seq >= seq:
        recipients.set(key, raw)
        return True
    return False


def encode_row(updated: Recipient, current: Recipient | None, stored: int, command: UpsertRecipient) -> bytes:
    """The stored form of an upserted row; Oversize if the upsert makes it outgrow SPEC §3's limits.

    Only growth by added values (an attribute, an e-mail address) is refused: a row stored larger before
    the limits existed (`stored` bytes) still takes an upsert that clears attributes or changes the status
    (an unsubscribe must never be refused for the size of a row), or that does not make it larger; the
    store's changelog limit still holds for those.
    """
    data = encode(updated)
    if current is not None and not _adds_values(command):
        return data
    if len(data) > MAX_RECORD_BYTES and (current is None or len(data) > stored):
        raise Oversize(f"the row would take {len(data)} bytes stored, more than {MAX_RECORD_BYTES}")
    count = len(updated.attributes)
    if count > MAX_ATTRIBUTES and (current is None or count > len(current.attributes)):
        raise Oversize(f"the row would have {count} attributes, more than {MAX_ATTRIBUTES}")
    return data


def _adds_values(command: UpsertRecipient) -> bool:
    if command.email is not msgspec.UNSET:
        return True
    attributes = command.attributes
    return attributes is not msgspec.UNSET and any(value is not None for value in attributes.values())


def encode_history(current: list[HistoryRecord], command: AppendHistory) -> bytes:
    """The stored history after the append: the newest of each type (rules.keep_newest), within the row
    limit (rules.fit_history); an engagement record without its sku takes it from the message's mail.sent.

    Oversize for a record that could not fit even alone (only a command that bypassed the door has one):
    dropping the whole history for it would be worse than skipping it.
    """
    for record in command.records:
        size = len(encode(record))
        if size > MAX_HISTORY_RECORD_BYTES:
            raise Oversize(f"a history record takes {size} bytes stored, more than {MAX_HISTORY_RECORD_BYTES}")
    records = named(command.records, current) if command.ifExists else command.records  # engagement only
    merged = append_history(current, records)
    data = encode(merged)
    if len(data) <= MAX_RECORD_BYTES:
        return data
    kept = fit_history(merged)
    log.info(
        "history of %s/%s: %d oldest records dropped to stay within %d bytes",
        command.database, command.originalId, len(merged) - len(kept), MAX_RECORD_BYTES,
    )  # fmt: skip
    return encode(kept)


def erase_idempotency(records: PartitionTransaction, command: EraseIdempotency) -> None:
    """Delete the recipient's records found through its index rows (a record written for another
    recipient since, under the same key, stays), and the index rows."""
    for index, _ in list(records.scan(index_prefix(recipient_key(command.database, command.originalId)))):
        record_key = indexed_record(index)
        raw = records.get(record_key)
        if raw is not None:
            upsert = decode_idempotency(raw).upsert
            if (upsert.database, upsert.originalId) == (command.database, command.originalId):
                records.set(record_key, None)
        records.set(index, None)


def sweep(recipients: PartitionTransaction, command: SweepInactive, seq: int) -> None:
    for key, raw in list(recipients.scan(f"{command.database}/".encode())):
        swept = sweep_inactive(decode_recipient(raw), command.before, seq)
        if swept is not None:
            recipients.set(key, encode(swept))


#: Commands per event are far fewer (publisher.CHUNK), so offset * SEQ_STRIDE + index orders them.
SEQ_STRIDE = 4096


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of an event's commands that were not applied."""

    failed: int = 0
    oversize: int = 0

    @property
    def skipped(self) -> int:
        return self.failed + self.oversize


def apply_all(chunks: Chunks, commands: list[Command], offset: int) -> Applied:
    """Stage every command of the event at `offset` in order; count (in metrics too) those skipped for size."""
    read = [c for c in commands if isinstance(c, UpsertRecipient) or (isinstance(c, AppendHistory) and c.ifExists)]
    chunks.recipients.prefetch([recipient_key(c.database, c.originalId) for c in read])
    failed = oversize = 0
    base = (offset + 1) * SEQ_STRIDE
    for index, command in coalesce_history(commands):
        try:
            apply_command(chunks, command, base + index)
        except (Oversize, RecordTooLarge) as exc:
            log.warning("skipping %s: %s", describe(command), exc)
            oversize += 1
        except Exception:
            log.exception("skipping command that failed to apply: %s", describe(command))
            failed += 1
    _oversize.inc(oversize)
    return Applied(failed, oversize)


def coalesce_history(commands: list[Command]) -> Iterator[tuple[int, Command]]:
    """(index, command) in order, with each run of history appends merged into one append per recipient.

    Appends of one recipient commute with those of another, and one append of many records gives the
    history that many appends in a row give (rules.append_history), but costs one decode and one encode
    of the stored history instead of one per record: 10,000 records of one recipient in one request
    would otherwise re-encode its history 10,000 times on the event loop. A record too large to store is
    left as an append of its own, so it is skipped (and counted) alone.
    """
    run: dict[tuple[str, str, bool], tuple[int, list[HistoryRecord]]] = {}
    for index, command in enumerate(commands):
        if isinstance(command, AppendHistory):
            whose = (command.database, command.originalId, command.ifExists)  # existence is checked per append
            for record in command.records:
                if len(encode(record)) > MAX_HISTORY_RECORD_BYTES:
                    yield index, msgspec.structs.replace(command, records=[record])
                else:
                    run.setdefault(whose, (index, []))[1].append(record)
            continue
        yield from _merged(run)
        run = {}
        yield index, command
    yield from _merged(run)


def _merged(run: dict[tuple[str, str, bool], tuple[int, list[HistoryRecord]]]) -> Iterator[tuple[int, Command]]:
    for (database, original_id, if_exists), (index, records) in run.items():
        yield index, AppendHistory(database=database, originalId=original_id, records=records, ifExists=if_exists)


#: Characters of an originalId shown in the log (an originalId has at most 256).
MAX_LOGGED_ID = 256


def describe(command: Command) -> str:
    """A command for the log: its kind and whose it is, never its values (they may be large, and personal)."""
    kind = type(command).__name__
    if isinstance(command, BatchInfo):
        return f"{kind} {command.batchId}"
    if isinstance(command, SweepInactive):
        return f"{kind} of {command.database} before {command.before}"
    if isinstance(command, SegmentTick):
        return f"{kind} at {command.at}"
    return f"{kind} of {command.database}/{command.originalId[:MAX_LOGGED_ID]!r}"
