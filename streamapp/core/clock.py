"""Time as streamapp stores it: UTC ISO 8601 strings with milliseconds, one set of helpers.

Stored times are strings (they travel in MessagePack records and JSON answers as written); a
time read back without an offset is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """The current time, as stored: UTC ISO 8601 with milliseconds."""
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str) -> datetime:
    """A stored time (an offset-less one is UTC)."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
