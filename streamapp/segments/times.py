"""Instants, local days and anniversaries, the way segment evaluation counts them.

Durations are exact elapsed time (P1D is 24 hours). Adding a duration to a datetime whose
tzinfo is a ZoneInfo would add wall-clock time instead (23 or 25 hours across a DST change),
so every instant that takes part in arithmetic has a fixed offset: offset-less values are
resolved in the service zone and converted to UTC here. Anniversaries are calendar days in
the service zone.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta, tzinfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_DAY = timedelta(days=1)
_MICRO = timedelta(microseconds=1)


def parse_instant(raw: object, tz: tzinfo) -> datetime | None:
    """An aware datetime from a stored ISO 8601 value (offset-less means `tz`); None if it is not one."""
    if type(raw) is str:
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            return None
    elif isinstance(raw, datetime):
        value = raw
    else:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=tz).astimezone(UTC)


def parse_day(raw: object) -> date | None:
    """A date from a stored `YYYY-MM-DD` value; None if it is not one."""
    if type(raw) is str:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            return None
    return raw if type(raw) is date else None


def aware(value: date | datetime, tz: tzinfo) -> datetime:
    """A definition's date-time (naive means `tz`) or date (its first moment in `tz`), with a fixed offset."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz).astimezone(UTC)
    return start_of_day(value, tz)


def start_of_day(day: date, tz: tzinfo) -> datetime:
    """The first moment of a local day, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def local_day(moment: datetime, tz: tzinfo) -> date:
    return moment.astimezone(tz).date()


def shifted(moment: datetime, delta: timedelta) -> datetime | None:
    """moment + delta in exact time, or None past the calendar's end (then it never happens)."""
    try:
        return moment.astimezone(UTC) + delta
    except OverflowError:
        return None


def next_anniversary(day: date, today: date) -> date | None:
    """The first anniversary of `day` on or after `today`; Feb 29 falls on Feb 28 in other years."""
    for year in (today.year, today.year + 1):
        if not 1 <= year <= 9999:
            return None
        if day.month == 2 and day.day == 29 and not calendar.isleap(year):
            candidate = date(year, 2, 28)
        else:
            candidate = day.replace(year=year)
        if candidate >= today:
            return candidate
    return None  # pragma: no cover - the next year's anniversary is always on or after today


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch: a compact, exact sort key for due times."""
    return (moment - EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)
