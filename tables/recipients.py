"""The recipients and history tables.

Both are keyed by `recipient_key(database, originalId)` (raw bytes) and
written only by the recipient-commands agent, from the partition that key
hashes to, so `app.router` finds the owner of any key from any worker.
Values are MessagePack bytes (see streamapp.core.models); `bytes` types make
Faust use its raw codec for both.
"""

from __future__ import annotations

from typing import Any

import faust

RECIPIENTS = "recipients"
HISTORY = "history"


def _table(app: faust.App, name: str, partitions: int, help: str) -> Any:
    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help=help,
    )


def recipients_table(app: faust.App, partitions: int) -> Any:
    return _table(app, RECIPIENTS, partitions, "Recipient by database/originalId")


def history_table(app: faust.App, partitions: int) -> Any:
    return _table(app, HISTORY, partitions, "Activity records by database/originalId, newest first")
