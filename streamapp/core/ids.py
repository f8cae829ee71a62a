"""Message and batch ids.

A message id starts with the partition of its recipient (4 decimal digits), then 12 hex digits
of milliseconds and 16 random hex digits: any worker knows from the id alone which partition's
ledger holds it (GET /api/v1/messages/{id} is forwarded to that partition's owner without a
lookup), ids sort by creation time within a partition, and the id is valid in a Message-ID.

A batch id (trigger batch, campaign) has the same shape with 8 random hex digits: 4 digits name
the partition of the `batches` table that holds its BatchInfo. Its messages' ids are the
recipient's partition, the batch id and the row number (8 hex digits), so all ledger rows of a
batch in one partition are one key range: counting them is a prefix scan.

Ids the API issues end in a tag (8 hex digits): an HMAC, with the deployment's key ring
(`[service] secret_file`), of the id, its database and its priority. A worker asked for a message
that has no ledger row yet tells an id that was issued (`queued`: SPEC §3, never 404 after a 202)
from one that never was (404) by the tag alone, with no record written before the 202. 32 bits
are enough: a forged id gains nothing but the answer `queued` for a message that does not exist.

A message sent with an idempotency key has an id derived from the request (the client's scoped
key and the body's hash) and its UTC day, instead of a random one: a worker that cannot reach the
key's owner (streamapp.http.forwarding) still answers a retry with the id of the first attempt,
and the send engine's ledger, keyed by id, sends that message once however often it is published.
Its time part is the start of that day.
Ids without a tag (made before tags existed, or by tests and benchmarks) are still valid ids.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from streamapp.core.keys import partition_for, recipient_key

_ID = re.compile(r"(\d{4})(?:[0-9a-f]{28}|\d{4}[0-9a-f]{28})(?:[0-9a-f]{8})?")
_BATCH_ID = re.compile(r"(\d{4})[0-9a-f]{20}")
#: Lengths of the ids with a tag: a single message's and a batch row's (those without are 32 and 36).
SINGLE_SIGNED, BATCH_SIGNED = 40, 44
TAG_HEX = 8
_TAG_CONTEXT = b"streamapp-message-id\0"
_DERIVED_CONTEXT = b"streamapp-idempotent-message\0"
DAY_MS = 86_400_000


def new_message_id(partition: int, now: float | None = None) -> str:
    """An id without a tag (tests, benchmarks): valid, but `queued` only once a worker recorded it."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{partition:04d}{millis:012x}{secrets.token_hex(8)}"


def message_id_for(
    database: str, original_id: str, partitions: int, key: bytes | None = None, priority: str = "transactional"
) -> str:
    """A new id for a message to this recipient, tagged with `key` (the signing key) when given."""
    unsigned = new_message_id(partition_for(recipient_key(database, original_id), partitions))
    return unsigned if key is None else unsigned + _tag(key, unsigned, database, priority)


def idempotent_message_id(
    database: str, original_id: str, partitions: int, key: bytes, request: bytes, now: float | None = None
) -> str:
    """The id of the message an idempotent `request` (scoped key and body hash) makes today, tagged with `key`.

    The same request on the same UTC day gets the same id on any worker, with no lookup.
    """
    day = int((time.time() if now is None else now) * 1000) // DAY_MS * DAY_MS
    partition = partition_for(recipient_key(database, original_id), partitions)
    derived = hmac.digest(key, _DERIVED_CONTEXT + request + b"\0" + str(day).encode(), hashlib.sha256)[:8].hex()
    unsigned = f"{partition:04d}{day:012x}{derived}"
    return unsigned + _tag(key, unsigned, database, "transactional")


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


def batch_time(batch_id: str) -> float | None:
    """When a well-formed batch id was made (Unix seconds); None for anything else."""
    return int(batch_id[4:16], 16) / 1000 if _BATCH_ID.fullmatch(batch_id) else None


def batch_message_id(
    partition: int, batch_id: str, row: int, key: bytes | None = None, database: str = "", priority: str = ""
) -> str:
    """The id of row `row` of a batch, for a recipient on `partition`; tagged with `key` when given."""
    unsigned = f"{partition:04d}{batch_id}{row:08x}"
    return unsigned if key is None else unsigned + _tag(key, unsigned, database, priority)


def batch_prefix(partition: int, batch_id: str) -> bytes:
    """The ledger key prefix of a batch's messages on `partition`."""
    return f"{partition:04d}{batch_id}".encode()


@dataclass(frozen=True, slots=True)
class Issued:
    """What a tagged id was issued for, and when (Unix seconds: the message's, or its batch's)."""

    database: str
    priority: str
    at: float


def issued(message_id: str, keys: Iterable[bytes], candidates: Iterable[tuple[str, str]]) -> Issued | None:
    """What the API issued `message_id` for, among the (database, priority) `candidates`; None for
    an id without a valid tag (forged, altered, untagged, or signed with a key no longer in `keys`)."""
    if partition_of(message_id) is None or len(message_id) not in (SINGLE_SIGNED, BATCH_SIGNED):
        return None
    unsigned, tag = message_id[:-TAG_HEX], message_id[-TAG_HEX:]
    at = int(unsigned[4:16] if len(message_id) == SINGLE_SIGNED else unsigned[8:20], 16) / 1000
    keys = list(keys)
    for database, priority in candidates:
        if any(hmac.compare_digest(tag, _tag(key, unsigned, database, priority)) for key in keys):
            return Issued(database, priority, at)
    return None


def _tag(key: bytes, unsigned: str, database: str, priority: str) -> str:
    data = _TAG_CONTEXT + f"{unsigned}\0{database}\0{priority}".encode()
    return hmac.digest(key, data, hashlib.sha256)[: TAG_HEX // 2].hex()
