"""Local times for journeys: quiet hours, `wait {until}`, date attributes, and whose zone applies.

Local means the recipient's `timezone` attribute when the database declares one and it names a
zone, else the service zone (SPEC §10). Every moment returned is strictly after `now`, so a run
that waits always pauses and a timer never fires before its local time. Wall times the clock
skips (a DST spring-forward) land just after the gap; a repeated one is its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from streamapp.journeys.nodes import QuietHours, WaitAttribute
from streamapp.segments.times import ONE_DAY, local_day, next_anniversary, parse_day, parse_instant, shifted

__all__ = ["attribute_due", "next_local", "quiet_until", "zone_named"]


@lru_cache(maxsize=1024)
def zone_named(name: str) -> ZoneInfo | None:
    """The zone of a recipient's `timezone` value, or None when it names none."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return None


def next_local(at: time, now: datetime, tz: ZoneInfo) -> datetime:
    """The first moment strictly after `now` whose local wall time in `tz` is `at`."""
    day = local_day(now, tz)
    for _ in range(3):
        candidate = datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
        if candidate > now:
            return candidate
        day += ONE_DAY
    raise AssertionError("a local time recurs every day")  # pragma: no cover


def quiet_until(quiet: QuietHours, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The end of the quiet window `now` falls in, or None when a send may go out now."""
    wall = now.astimezone(tz).time().replace(tzinfo=None)
    start, end = quiet.start, quiet.end
    inside = start <= wall < end if start < end else (wall >= start or wall < end)
    return next_local(end, now, tz) if inside else None


def attribute_due(wait: WaitAttribute, raw: Any, now: datetime, tz: ZoneInfo) -> datetime | None:
    """When an attribute wait ends, or None when the recipient has no such date.

    A date-time plus the offset is that moment (one already past ends the wait at once: `now`).
    A date is its local midnight plus the offset; if that is not after `now`, its next anniversary's
    is (a birthday), so a date wait always pauses.
    """
    if wait.type == "datetime":
        moment = parse_instant(raw, tz)
        if moment is None:
            return None
        due = shifted(moment, wait.offset)
        return now if due is None or due <= now else due
    day = parse_day(raw)
    if day is None:
        return None
    due = _day_start(day, tz, wait.offset)
    if due is not None and due > now:
        return due
    return _anniversary_due(day, tz, wait.offset, now)


def _day_start(day: date, tz: ZoneInfo, offset: timedelta) -> datetime | None:
    return shifted(datetime.combine(day, time(), tzinfo=tz), offset)


def _anniversary_due(day: date, tz: ZoneInfo, offset: timedelta, now: datetime) -> datetime | None:
    """The first anniversary of `day` whose local midnight plus `offset` is after `now`."""
    target = shifted(now, -offset)
    if target is None:
        return None
    today = local_day(target, tz)
    for _ in range(3):
        upcoming = next_anniversary(day, today)
        if upcoming is None:
            return None
        due = _day_start(upcoming, tz, offset)
        if due is not None and due > now:
            return due
        today = upcoming + ONE_DAY
    return None  # pragma: no cover - the second anniversary after the target is always later
