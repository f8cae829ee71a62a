"""streamapp.sending.reports.ReportEffects alone: notices about one message take turns."""

from __future__ import annotations

import asyncio
from typing import Any

from streamapp.core.ids import new_message_id
from streamapp.core.models import BounceNotice, MessageState, RecipientCommand
from streamapp.sending.reports import ReportEffects, notice_command

AT = "2026-12-01T10:00:00.000+00:00"


class Rows:
    """The ledger's get and put, with a put that yields to the loop as the real one does (it awaits Kafka)."""

    def __init__(self, state: MessageState) -> None:
        self.rows = {state.messageId: state}

    def get(self, partition: int, message_id: str) -> MessageState | None:
        return self.rows.get(message_id)

    async def put(self, partition: int, state: MessageState) -> None:
        await asyncio.sleep(0.01)
        self.rows[state.messageId] = state


def test_two_notices_about_one_message_at_once_apply_once() -> None:
    message_id = new_message_id(0)
    rows = Rows(MessageState(messageId=message_id, database="members", originalId="ann", priority="campaign",
                             status="sent", createdAt=AT, updatedAt=AT))  # fmt: skip
    published: list[list[RecipientCommand]] = []

    async def publish(commands: list[RecipientCommand]) -> None:
        await asyncio.sleep(0.01)
        published.append(commands)

    async def both() -> None:
        effects = ReportEffects(rows, publish)  # type: ignore[arg-type]
        notice = BounceNotice(kind="hard", source="dsn", at=AT, reason="550 5.1.1")
        command = notice_command(message_id, notice)
        await asyncio.gather(effects.apply(0, command), effects.apply(0, command))
        assert not effects._turns  # nothing kept once no notice is open

    asyncio.run(both())
    assert len(published) == 1
    row: Any = rows.rows[message_id]
    assert (row.status, row.engaged) == ("bounced", ["bounced"])
