"""Evaluating an unsaved definition over a partition's recipients (`POST …/segments/preview`).

Nothing is stored: the partition's rows are scanned in key order and tested at one `now`, with
`{"segment": …}` leaves answered by the partition's current memberships. The scan reads
PREVIEW_SLICE rows between yields, so a preview of a large partition never holds the event loop
for long; it runs at the build rate (SPEC §4: within 1 s for 100,000 recipients per worker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, tzinfo
from itertools import islice
from typing import cast

from streamapp.core.models import decode_history, decode_recipient
from streamapp.kafka.store import Store
from streamapp.segments.evaluate import compile_definition
from streamapp.segments.nodes import Node
from streamapp.segments.partition import PartitionSegments, reads_history
from streamapp.segments.stored import StoredView
from streamapp.segments.view import RecipientView

__all__ = ["SAMPLE", "preview_partition"]

#: Members named in a preview's answer.
SAMPLE = 20
PREVIEW_SLICE = 5_000


async def preview_partition(
    partition: int,
    database: str,
    node: Node,
    recipients: Store,
    history: Store,
    part: PartitionSegments | None,
    now: datetime,
    tz: tzinfo,
) -> tuple[int, list[str]]:
    """(members, up to SAMPLE of their originalIds in key order) of `node` in one partition."""
    test = compile_definition(node, tz).matches
    needs_history = reads_history([node])
    prefix = f"{database}/".encode()
    width = len(prefix)
    count, sample = 0, list[str]()
    start: bytes | None = None
    while True:
        rows = list(islice(recipients.items(partition, prefix, start), PREVIEW_SLICE))
        histories: Mapping[bytes, bytes | None] = {}
        if needs_history and rows:
            reads = history.transaction(partition)
            reads.prefetch([key for key, _ in rows])
            histories = reads.loaded
        for key, raw in rows:
            original_id = key[width:].decode()
            row = decode_recipient(raw)
            stored = histories.get(key)
            view = StoredView(row, decode_history(stored) if stored else None) if needs_history else row

            def member(segment: str, original_id: str = original_id) -> bool:
                return part is not None and part.is_member(database, original_id, segment)

            if test(cast(RecipientView, view), now, member):
                count += 1
                if len(sample) < SAMPLE:
                    sample.append(original_id)
        if len(rows) < PREVIEW_SLICE:
            return count, sample
        start = rows[-1][0] + b"\x00"
        await asyncio.sleep(0)
