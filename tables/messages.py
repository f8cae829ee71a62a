"""The message ledger: one MessageState (MessagePack) per messageId.

Written only by the send engine, from the partition of the message's recipient (the id carries
it, see streamapp.core.ids), so the row lives on the worker that owns the recipient and
standby replicas and recovery work as for every other table. `app.router` cannot find a row by
hashing its key; the message routes read the partition from the id instead.
"""

from __future__ import annotations

from typing import Any

import faust

MESSAGES = "messages"


def messages_table(app: faust.App, partitions: int) -> Any:
    return app.Table(
        MESSAGES, key_type=bytes, value_type=bytes, partitions=partitions, help="Message ledger by messageId"
    )
