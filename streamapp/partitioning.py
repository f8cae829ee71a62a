"""Recipient keys and the partition each one lives on.

Every writer (API, imports) sends a recipient's commands to the partition
Kafka's default partitioner would choose for its key (murmur2 of the key
bytes), so the table row written from that partition is found again by
`app.router` from any worker.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def recipient_key(database: str, original_id: str) -> bytes:
    """Table and topic key; database names cannot contain '/', so the split is unique."""
    return f"{database}/{original_id}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    database, _, original_id = key.decode().partition("/")
    return database, original_id


def partition_for(key: bytes, partitions: int) -> int:
    """Same choice as Kafka's (and aiokafka's) default partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
