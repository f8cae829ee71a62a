"""ISO 8601 durations restricted to days, hours, minutes and seconds (SPEC §9, §10).

Years, months and weeks are refused on purpose: their length varies (or, for
weeks, adds a second spelling of days), and a segment window or a journey wait
must mean the same number of seconds on every day of the year.
"""

from __future__ import annotations

import re
from datetime import timedelta

MIN_DURATION = timedelta(seconds=1)
MAX_DURATION = timedelta(days=400)

_PATTERN = re.compile(r"(-?)P(?:(\d{1,9})D)?(?:T(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,9})S)?)?")
_LONG_NUMBER = re.compile(r"\d{10}")
_EXAMPLES = "e.g. PT30M, P7D or P1DT12H"


def parse_duration(text: object, *, minimum: timedelta = MIN_DURATION, maximum: timedelta = MAX_DURATION) -> timedelta:
    """A positive duration such as `P1DT2H30M`; ValueError with a message fit for a user."""
    value = _parse(text, allow_sign=False)
    _check_range(text, value, minimum, maximum)
    return value


def parse_duration_offset(
    text: object, *, minimum: timedelta = MIN_DURATION, maximum: timedelta = MAX_DURATION
) -> timedelta:
    """A signed offset (`-P1D` is one day before); its magnitude must lie in [minimum, maximum]."""
    value = _parse(text, allow_sign=True)
    _check_range(text, abs(value), minimum, maximum)
    return value


def format_duration(value: timedelta) -> str:
    """The canonical text of a whole-second duration: `format_duration(parse_duration(t))` parses back to the same."""
    seconds = int(value.total_seconds())
    if seconds != value.total_seconds():
        raise ValueError("fractional seconds cannot be written as a duration here")
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    text = f"{sign}P{f'{days}D' if days else ''}{f'T{clock}' if clock else ''}"
    return text if days or clock else f"{sign}PT0S"


def _parse(text: object, *, allow_sign: bool) -> timedelta:
    if not isinstance(text, str):
        raise ValueError(f"must be an ISO 8601 duration string ({_EXAMPLES})")
    match = _PATTERN.fullmatch(text)
    if match is None or text.endswith(("P", "T")):
        raise ValueError(_explain(text))
    sign, days, hours, minutes, seconds = match.groups()
    if sign and not allow_sign:
        raise ValueError(f"{text!r}: a duration cannot be negative here")
    try:
        value = timedelta(
            days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0), seconds=int(seconds or 0)
        )
    except OverflowError:
        raise ValueError(f"{text!r} is far too long") from None
    return -value if sign else value


def _check_range(text: object, magnitude: timedelta, minimum: timedelta, maximum: timedelta) -> None:
    if not minimum <= magnitude <= maximum:
        low, high = format_duration(minimum), format_duration(maximum)
        raise ValueError(f"{text!r} is out of range: durations go from {low} to {high}")


def _explain(text: str) -> str:
    """Why a string is not a duration, naming the usual mistakes."""
    body = text.lstrip("-")
    if _LONG_NUMBER.search(body):
        return f"{text[:40]!r}... is far too long"
    if body != body.upper() and _PATTERN.fullmatch(text.upper()):
        return f"{text!r}: write the designators in upper case ({_EXAMPLES})"
    if "W" in body:
        return f"{text!r}: weeks are not supported; use days (P7D)"
    date_part = body.split("T", 1)[0]
    if "Y" in date_part or "M" in date_part:
        return f"{text!r}: years and months are not supported (their length varies); use days, e.g. P30D or P365D"
    if "." in body or "," in body:
        return f"{text!r}: fractions are not supported; use a smaller unit (PT90M, not PT1.5H)"
    return f"{text!r} is not an ISO 8601 duration of days, hours, minutes and seconds ({_EXAMPLES})"
