"""The segments table: each recipient's segment state (SPEC §9), beside its row.

A recipient's state is keyed like its row (`recipient_key(database, originalId)`) and written by the
recipient-commands agent from that key's partition, in the same event (and flush) as the row, so the
state and the row always live on the same worker and no lookup on the hot path crosses workers.
Values are a `segments.state.SegmentState` (MessagePack: a membership bitmask over the database's
segment slots and the next due time, a few bytes).

Bookkeeping rows of a partition share the table under keys that start with a zero byte (no
recipient key does: database names start with a letter or digit); they are read and written only
with the partition's number, never through `app.router`:

- `\\x00slots/<database>`: the partition's `SlotTable` (which bit is which segment);
- `\\x00built/<database>`: segment -> fingerprint of the definition the partition's bits were built
  for; a segment missing here, or with another fingerprint, is rebuilt when the partition is loaded.
"""

from __future__ import annotations

from typing import Any

import faust

SEGMENTS = "segments"
BOOKKEEPING = b"\x00"
SLOTS = b"\x00slots/"
BUILT = b"\x00built/"


def segments_table(app: faust.App, partitions: int) -> Any:
    return app.Table(
        SEGMENTS, key_type=bytes, value_type=bytes, partitions=partitions, help="Segment state by database/originalId"
    )


def slots_key(database: str) -> bytes:
    return SLOTS + database.encode()


def built_key(database: str) -> bytes:
    return BUILT + database.encode()
