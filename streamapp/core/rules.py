"""How commands change a recipient and its history: pure functions.

Kept apart from the agent so the rules of SPEC §3 (partial upserts, sticky
unsubscribe/bounce, history order) are unit-tested without Kafka.
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter

import msgspec

from streamapp.core.models import HistoryRecord, Recipient, SoftBounce, UpsertRecipient, encode
from streamapp.core.validation import MAX_RECORD_BYTES
from streamapp.settings import ENGAGEMENT_TYPES

#: Newest records kept per recipient and type (SPEC §3)...
HISTORY_LIMIT = 1000
#: ...and per engagement type (SPEC §8): sends and opens never push purchases out.
ENGAGEMENT_LIMIT = 200
_ENGAGEMENT = frozenset(ENGAGEMENT_TYPES)
_TIME, _TYPE = attrgetter("time"), attrgetter("type")
#: Records dropped one by one from a copy (keep_newest); more are filtered in one pass.
_FEW = 32
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
    """`current` (a stored history, newest first: times are UTC ISO strings) with `records` added, the newest
    `type_limit` of each type kept; known ids are skipped."""
    known = {r.id for r in current}
    new = []
    for record in records:  # an id given twice in `records` is taken once, as by two appends in a row
        if record.id not in known:
            known.add(record.id)
            new.append(record)
    if not new:
        return current
    new.sort(key=_TIME, reverse=True)
    if not current or new[-1].time >= current[0].time:  # the usual case, events newer than what is kept
        merged = new + current
    else:
        merged = sorted([*new, *current], key=_TIME, reverse=True)
    if len(merged) <= HISTORY_LIMIT and not any(r.type in _ENGAGEMENT for r in new):
        return merged  # `current` is within the limits, and no other type can have more than 1,000
    return keep_newest(merged)


def type_limit(kind: str) -> int:
    """Records of type `kind` a recipient keeps."""
    return ENGAGEMENT_LIMIT if kind in _ENGAGEMENT else HISTORY_LIMIT


def keep_newest(records: list[HistoryRecord]) -> list[HistoryRecord]:
    """The newest `type_limit` records of each type of `records` (newest first), in their order.

    Per type, so a flood of one type (sends, page views) never pushes another's records out. Counted in C
    (`list.count` per type, at most 20 + 6 of them): the bulk path appends to full histories of 1,000
    records, where a Python loop over every record cost a fifth more than the decode and encode around it.
    """
    if len(records) <= ENGAGEMENT_LIMIT:
        return records
    types = list(map(_TYPE, records))
    drop = [
        index
        for kind in set(types)
        if (excess := types.count(kind) - type_limit(kind)) > 0
        for index in _oldest(types, kind, excess)
    ]
    if not drop:
        return records
    drop.sort()
    if drop[0] == len(records) - len(drop):  # the usual case: the oldest records of the list
        return records[: drop[0]]
    if len(drop) <= _FEW:  # a record or two per append: a few memmoves beat a pass in Python
        kept = list(records)
        for index in reversed(drop):
            del kept[index]
        return kept
    dropped = set(drop)
    return [record for index, record in enumerate(records) if index not in dropped]


def _oldest(types: list[str], kind: str, count: int) -> list[int]:
    """The positions of the last `count` records of type `kind` (usually at the very end)."""
    tail = len(types) - count
    if types[tail:].count(kind) == count:  # counted in C: the last `count` are all of it
        return list(range(tail, len(types)))
    found = []
    for index in range(len(types) - 1, -1, -1):
        if types[index] == kind:
            found.append(index)
            if len(found) == count:
                break
    return found


def fit_history(records: list[HistoryRecord], max_bytes: int = MAX_RECORD_BYTES) -> list[HistoryRecord]:
    """The records (`records` is newest first) a list of at most `max_bytes` stored keeps: the newest
    `cap` of every type, `cap` as large as fits, and then as many of the next rank as still fit.

    A history that would outgrow the row limit (SPEC §3) drops old records rather than refuse the new
    one: history is a log that is already trimmed to its newest records by count (keep_newest), what
    segments and journeys look at is the recent activity, and refusing would freeze a recipient's history
    for good once it is full. Every type is cut to the same depth, so a type with many records (or large
    ones) never takes the place of another type's few; each type keeps its newest records without a gap.
    Call it only for a list that is too large: it encodes each record.
    """
    ranks, sizes, depth = [], [], Counter[str]()
    for record in records:
        ranks.append(depth[record.type])
        depth[record.type] += 1
        sizes.append(len(encode(record)))
    by_rank = [0] * (max(ranks, default=-1) + 1)
    for rank, size in zip(ranks, sizes, strict=True):
        by_rank[rank] += size
    cap, total = 0, _ARRAY_HEADER
    while cap < len(by_rank) and total + by_rank[cap] <= max_bytes:
        total += by_rank[cap]
        cap += 1
    kept = []
    for record, rank, size in zip(records, ranks, sizes, strict=True):
        if rank < cap:
            kept.append(record)
        elif rank == cap and total + size <= max_bytes:  # the next rank, newest first, while it fits
            total += size
            kept.append(record)
    return kept


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
