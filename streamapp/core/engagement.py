"""Engagement history (SPEC §8): the `mail.*` records streamapp writes itself, one per message and type.

A record's id is derived from its type and the messageId (and for a click the URL's digest, for a
machine open `machine`: streamapp.sending.tracking), so a replayed send, a second click on the same
unsubscribe link, a repeat open or a bounce reported twice adds nothing (rules.append_history skips
known ids). `sku` is the trigger or campaign name and `fields.custom1` the messageId; a door that does
not know the name (an unsubscribe link carries only the messageId) leaves `sku` empty, and the
agent takes it from the message's `mail.sent` record (`named`).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from streamapp.core.models import AppendHistory, HistoryRecord
from streamapp.settings import ENGAGEMENT_TYPES

EngagementType = Literal[
    "mail.sent", "mail.opened", "mail.clicked", "mail.bounced", "mail.complained", "mail.unsubscribed"
]
#: The field of an engagement record that holds its messageId (`custom2` holds a click's URL).
MESSAGE_FIELD = "custom1"
URL_FIELD = "custom2"
#: `custom3 = "machine"`: an open by a mail-privacy prefetcher or within a minute of delivery (SPEC §8).
MACHINE_FIELD = "custom3"
MACHINE = "machine"
_ENGAGEMENT = frozenset(ENGAGEMENT_TYPES)


def is_engagement(kind: str) -> bool:
    return kind in _ENGAGEMENT


def record_id(kind: EngagementType, message_id: str, detail: str | None = None) -> str:
    """One record per message and type (and `detail`: a clicked URL's digest, `machine` for a machine
    open): what makes recording idempotent."""
    return f"{kind}:{message_id}" if detail is None else f"{kind}:{message_id}:{detail}"


def engagement(
    kind: EngagementType,
    *,
    database: str,
    original_id: str,
    message_id: str,
    name: str | None,
    at: str,
    detail: str | None = None,
    fields: dict[str, str] | None = None,
) -> AppendHistory:
    """The append of one engagement record; `ifExists`, so it never recreates an erased recipient's history."""
    record = HistoryRecord(
        id=record_id(kind, message_id, detail), type=kind, time=at, sku=name,
        fields={MESSAGE_FIELD: message_id, **(fields or {})},
    )  # fmt: skip
    return AppendHistory(database=database, originalId=original_id, records=[record], ifExists=True)


def named(records: list[HistoryRecord], current: list[HistoryRecord]) -> list[HistoryRecord]:
    """`records` with the sku of each unnamed engagement record taken from its message's `mail.sent` record
    in `current`, when there is one (cheap when none needs it: one pass over `records`)."""
    unnamed = [r for r in records if r.sku is None and is_engagement(r.type) and MESSAGE_FIELD in r.fields]
    if not unnamed:
        return records
    names = {r.fields.get(MESSAGE_FIELD): r.sku for r in current if r.type == "mail.sent" and r.sku is not None}
    wanted = {id(r) for r in unnamed if r.fields[MESSAGE_FIELD] in names}
    if not wanted:
        return records
    return [msgspec.structs.replace(r, sku=names[r.fields[MESSAGE_FIELD]]) if id(r) in wanted else r for r in records]
