"""The soft-bounce rule: five soft bounces in a row make a recipient bounced (SPEC §6).

Applied by the one writer of the recipients table, the recipient-commands agent, so counting
stays in order with every other write of the recipient. Like `state.apply_upsert`, a command at
or before the recipient's `seq` was already applied (a replay after a crash) and changes nothing,
which makes "inc" idempotent.
"""

from __future__ import annotations

import msgspec

from streamapp.core.models import Recipient, SoftBounce

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
