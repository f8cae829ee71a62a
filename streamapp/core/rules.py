"""How commands change a recipient and its history: pure functions.

Kept apart from the agent so the rules of SPEC §3 (partial upserts, sticky
unsubscribe/bounce, history order) are unit-tested without Kafka.
"""

from __future__ import annotations

import msgspec

from streamapp.core.models import HistoryRecord, Recipient, SoftBounce, UpsertRecipient, encode
from streamapp.core.validation import MAX_RECORD_BYTES

#: Newest records kept per recipient: one table value holds the whole list,
#: and Kafka caps a changelog record at 1 MB.
HISTORY_LIMIT = 1000
#: MessagePack's header of an array of up to 2^32 items.
_ARRAY_HEADER = 5


def apply_upsert(current: Recipient | None, command: UpsertRecipient, seq: int = 0) -> Recipient:
    """Touch only the fields the command carries; a command older than the state is skipped."""
    if current is None:
        return _new_recipient(command, seq)
    if (seq and current.seq >= seq) or command.createOnly:
        return current  # replayed after a crash (its effect is there), or only meant to create
    changes: dict[str, object] = {"updatedAt": max(current.updatedAt, command.at), "seq": max(current.seq, seq)}
    if command.email is not msgspec.UNSET:
        changes["email"] = command.email
    if command.attributes is not msgspec.UNSET:
        merged = dict(current.attributes)
        for name, value in command.attributes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        changes["attributes"] = merged
    if command.status is not msgspec.UNSET:
        changes["status"] = command.status
        if command.status == "active":
            changes["softBounces"] = 0
    elif command.reactivate and current.status == "inactive":
        changes["status"] = "active"
    return msgspec.structs.replace(current, **changes)


def upsert_or_skip(current: Recipient | None, command: UpsertRecipient, seq: int = 0) -> Recipient | None:
    """`apply_upsert`, except that an `ifExists` command (an unsubscribe link) leaves an absent recipient
    absent (None): an erased recipient is never brought back by a link in a mail it was sent earlier."""
    if current is None and command.ifExists:
        return None
    return apply_upsert(current, command, seq)


def _new_recipient(command: UpsertRecipient, seq: int) -> Recipient:
    """The common case of a bulk import, built in one step (no merge, no copy)."""
    attributes = command.attributes
    return Recipient(
        originalId=command.originalId,
        email=command.emailIfNew if command.email is msgspec.UNSET else command.email,
        attributes={} if attributes is msgspec.UNSET else {k: v for k, v in attributes.items() if v is not None},
        status="active" if command.status is msgspec.UNSET else command.status,
        createdAt=command.at,
        updatedAt=command.at,
        seq=seq,
    )


def sweep_inactive(current: Recipient, before: str, seq: int = 0) -> Recipient | None:
    """The recipient made inactive by a replace import's sweep, or None if untouched."""
    if current.status != "active" or current.updatedAt >= before or (seq and current.seq >= seq):
        return None
    return msgspec.structs.replace(current, status="inactive", updatedAt=before, seq=max(current.seq, seq))


def append_history(current: list[HistoryRecord], records: list[HistoryRecord]) -> list[HistoryRecord]:
    """Newest first (times are UTC ISO strings), at most HISTORY_LIMIT kept; known ids are skipped."""
    known = {r.id for r in current}
    new = []
    for record in records:  # an id given twice in `records` is taken once, as by two appends in a row
        if record.id not in known:
            known.add(record.id)
            new.append(record)
    if not new:
        return current
    merged = sorted([*new, *current], key=lambda r: r.time, reverse=True)
    return merged[:HISTORY_LIMIT]


def fit_history(records: list[HistoryRecord], max_bytes: int = MAX_RECORD_BYTES) -> list[HistoryRecord]:
    """The newest records (`records` is newest first) whose list takes at most `max_bytes` stored.

    A history that would outgrow the row limit (SPEC §3) drops its oldest records rather than refuse the
    new one: history is a log that is already trimmed to its newest records by count (HISTORY_LIMIT), what
    segments and journeys look at is the recent activity, and refusing would freeze a recipient's history
    for good once it is full. The kept records are the newest ones without a gap, as with HISTORY_LIMIT.
    Call it only for a list that is too large: it encodes each record.
    """
    kept, total = 0, _ARRAY_HEADER
    for record in records:
        total += len(encode(record))
        if total > max_bytes:
            break
        kept += 1
    return records[:kept]


# -- soft bounces (SPEC §6): five in a row make a recipient bounced. Applied by the one writer of
# the recipients table, so counting stays in order with every other write of the recipient; a
# command at or before the recipient's `seq` was already applied and changes nothing ("inc" is
# idempotent across replays).

#: Soft bounces in a row that make a recipient bounced.
SOFT_BOUNCE_LIMIT = 5


def apply_soft_bounce(current: Recipient | None, command: SoftBounce, seq: int = 0) -> Recipient | None:
    """The recipient after the command, or None when nothing changes (unknown recipient, replay)."""
    if current is None or (seq and current.seq >= seq):
        return None
    if command.action == "reset":
        if current.softBounces == 0:
            return None
        return msgspec.structs.replace(current, softBounces=0, seq=max(current.seq, seq))
    count = current.softBounces + 1
    status = "bounced" if count >= SOFT_BOUNCE_LIMIT else current.status
    updated_at = max(current.updatedAt, command.at)
    return msgspec.structs.replace(
        current, softBounces=count, status=status, updatedAt=updated_at, seq=max(current.seq, seq)
    )
