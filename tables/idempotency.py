"""The idempotency table: one IdempotencyRecord per (token, trigger, key) of a single trigger message.

Records are written and read only by the worker that owns the key's partition (the API forwards a request
with a key there), with a durable write (streamapp.kafka.store.Store.put_durably), so a check-and-set under a
local lock gives one message per key (except across a partition move in the
middle of a request: streamapp.sending.idempotency).

Bookkeeping rows share the table, under keys that start with a zero byte (a record's
key starts with the hex digest of its token):

- `\\x00r` + length (2 bytes) + recipient key + record key, value the record's `createdAt`: the
  index of a recipient's records in this partition, written before the record, so erasing the
  recipient (EraseIdempotency, sent to every partition) finds them with a prefix seek;
- `\\x00e` + recipient key, value the erase time: the recipient was erased; its ledger rows of this
  partition made before then are scrubbed by streamapp.sending.retention, which also removes these
  rows after `[service] retention`;
- `\\x00s`, value the time of the last erase: a scrub is wanted; the sweeper passes over the
  partition soon and removes it (one read per partition tells it, not a scan of the marks).
"""

from __future__ import annotations

from typing import Any

import faust

IDEMPOTENCY = "idempotency"
#: The first byte of every row that is not a record.
BOOKKEEPING = b"\x00"
INDEX = b"\x00r"
ERASED = b"\x00e"
SCRUB = b"\x00s"
_LENGTH = 2


def idempotency_table(app: faust.App, partitions: int) -> Any:
    return app.Table(
        IDEMPOTENCY, key_type=bytes, value_type=bytes, partitions=partitions, help="Trigger messages by idempotency key"
    )


def index_prefix(recipient: bytes) -> bytes:
    """The keys of one recipient's index rows (its length first: no recipient key is a prefix of another's)."""
    return INDEX + len(recipient).to_bytes(_LENGTH, "big") + recipient


def index_key(recipient: bytes, record: bytes) -> bytes:
    return index_prefix(recipient) + record


def indexed_record(index: bytes) -> bytes:
    """The record key an index row names."""
    size = int.from_bytes(index[len(INDEX) : len(INDEX) + _LENGTH], "big")
    return index[len(INDEX) + _LENGTH + size :]


def erased_key(recipient: bytes) -> bytes:
    return ERASED + recipient


def erased_recipient(key: bytes) -> bytes:
    return key[len(ERASED) :]
