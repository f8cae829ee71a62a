"""Message and batch ids.

A message id starts with the partition of its recipient (4 decimal digits), then 12 hex digits
of milliseconds and 16 random hex digits: any worker knows from the id alone which partition's
ledger holds it (GET /api/v1/messages/{id} is forwarded to that partition's owner without a
lookup), ids sort by creation time within a partition, and the id is valid in a Message-ID.

A batch id (trigger batch, campaign) has the same shape with 8 random hex digits: 4 digits name
the partition of the `batches` table that holds its BatchInfo. Its messages' ids are the
recipient's partition, the batch id and the row number (8 hex digits), so all ledger rows of a
batch in one partition are one key range: counting them is a prefix scan.
"""

from __future__ import annotations

import re
import secrets
import time

from streamapp.core.keys import partition_for, recipient_key

_ID = re.compile(r"(\d{4})(?:[0-9a-f]{28}|\d{4}[0-9a-f]{28})")
_BATCH_ID = re.compile(r"(\d{4})[0-9a-f]{20}")


def new_message_id(partition: int, now: float | None = None) -> str:
    millis = int((time.time() if now is None else now) * 1000)
    return f"{partition:04d}{millis:012x}{secrets.token_hex(8)}"


def message_id_for(database: str, original_id: str, partitions: int) -> str:
    """A new id for a message to this recipient."""
    return new_message_id(partition_for(recipient_key(database, original_id), partitions))


def partition_of(message_id: str) -> int | None:
    """The partition a well-formed id names; None for anything else."""
    match = _ID.fullmatch(message_id)
    return int(match.group(1)) if match else None


def new_batch_id(partition: int, now: float | None = None, tag: int | None = None) -> str:
    """A batch id naming `partition`; `tag` (32 bits) replaces the random part for ids made again."""
    millis = int((time.time() if now is None else now) * 1000)
    suffix = secrets.token_hex(4) if tag is None else f"{tag & 0xFFFFFFFF:08x}"
    return f"{partition:04d}{millis:012x}{suffix}"


def batch_partition(batch_id: str) -> int | None:
    """The partition of the `batches` table a well-formed batch id names; None for anything else."""
    match = _BATCH_ID.fullmatch(batch_id)
    return int(match.group(1)) if match else None


def batch_message_id(partition: int, batch_id: str, row: int) -> str:
    """The id of row `row` of a batch, for a recipient on `partition`."""
    return f"{partition:04d}{batch_id}{row:08x}"


def batch_prefix(partition: int, batch_id: str) -> bytes:
    """The ledger key prefix of a batch's messages on `partition`."""
    return f"{partition:04d}{batch_id}".encode()
