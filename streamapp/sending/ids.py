"""Message ids and topic names.

A message id starts with the partition of its recipient (4 decimal digits), then 12 hex digits
of milliseconds and 16 random hex digits: any worker knows from the id alone which partition's
ledger holds it (GET /api/v1/messages/{id} is forwarded to that partition's owner without a
lookup), ids sort by creation time within a partition, and the id is valid in a Message-ID.
"""

from __future__ import annotations

import re
import secrets
import time

from streamapp.models import PRIORITIES, Priority
from streamapp.partitioning import partition_for, recipient_key
from streamapp.settings import Settings

_ID = re.compile(r"(\d{4})[0-9a-f]{28}")


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


def messages_topic(settings: Settings, priority: Priority) -> str:
    return f"{settings.service.id}-messages-{priority}"


def messages_topics(settings: Settings) -> list[str]:
    return [messages_topic(settings, p) for p in PRIORITIES]
