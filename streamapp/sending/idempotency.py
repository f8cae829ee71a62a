"""Idempotency keys of single trigger messages: one message per key for 24 hours.

A key is scoped to its token (by the token's digest) and trigger and lives in one partition of
the `idempotency` table (murmur2 of the scoped key). The API forwards a keyed request to the
worker owning that partition, which checks and records the key under a lock of its own: two
concurrent requests with one key give one message. The record is written durably *before* the
message is published and marked published after: a retry after a crash in between publishes the
same message id again (the ledger makes that harmless), so nothing accepted is lost and nothing
is sent twice.

One window remains: a partition that moves to another worker between the ownership check and
the record's write. The new owner may then not see the record, and a retry in that moment gets a
second message. It is as wide as one durable write during a rebalance.

Each record has an index row under its recipient (streamapp.tables.idempotency), written before
it: erasing the recipient (SPEC §3) erases its records in every partition. Records are removed
`[service] retention` after they were made (streamapp.sending.retention).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from streamapp.core import clock
from streamapp.core.keys import partition_for, recipient_key
from streamapp.core.models import IdempotencyRecord, decode_idempotency, encode
from streamapp.kafka.store import Store
from streamapp.tables.idempotency import index_key

#: How long a key gives back its first message (SPEC §4).
KEY_LIFETIME = timedelta(hours=24)


def scoped_key(token_sha256: str, trigger: str, key: str) -> bytes:
    """The table key of a client's idempotency key: `token_sha256` is `TokenSettings.sha256`.

    The digest, not the token's name, tells clients apart: a name is only a label, and a
    client whose token was replaced (same name, new digest) must not get the old client's
    messages (or a 409 for its keys).
    """
    return f"{token_sha256}\x1f{trigger}\x1f{key}".encode()


class IdempotencyKeys:
    def __init__(self, store: Store, partitions: int) -> None:
        self.store = store
        self.partitions = partitions
        #: One lock per key in use, with the number of requests holding or awaiting it.
        self._locks: dict[bytes, tuple[asyncio.Lock, int]] = {}

    def partition(self, key: bytes) -> int:
        return partition_for(key, self.partitions)

    @contextlib.asynccontextmanager
    async def locked(self, key: bytes) -> AsyncIterator[None]:
        """Serialize requests with one key on this worker (the only one serving its partition)."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def get(self, key: bytes, now: datetime | None = None) -> IdempotencyRecord | None:
        """The live record of `key`; one older than KEY_LIFETIME counts as absent."""
        raw = self.store.get(self.partition(key), key)
        if raw is None:
            return None
        record = decode_idempotency(raw)
        if clock.parse_time(record.createdAt) + KEY_LIFETIME < (now or datetime.now(UTC)):
            return None
        return record

    async def put(self, key: bytes, record: IdempotencyRecord) -> None:
        """Write the record durably, after its recipient's index row (so erasing the recipient finds it)."""
        partition = self.partition(key)
        await self._index(partition, key, record)
        await self.store.put_durably(partition, key, encode(record))

    async def _index(self, partition: int, key: bytes, record: IdempotencyRecord) -> None:
        recipient = recipient_key(record.upsert.database, record.upsert.originalId)
        index = index_key(recipient, key)
        made = record.createdAt.encode()  # the index row expires with its record (streamapp.sending.retention)
        if self.store.get(partition, index) != made:
            await self.store.put_durably(partition, index, made)
