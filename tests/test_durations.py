"""ISO 8601 durations of days, hours, minutes and seconds (SPEC §9)."""

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.durations import (
    MAX_DURATION,
    MIN_DURATION,
    format_duration,
    parse_duration,
    parse_duration_offset,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1S", timedelta(seconds=1)),
        ("PT90M", timedelta(minutes=90)),
        ("PT48H", timedelta(hours=48)),
        ("P7D", timedelta(days=7)),
        ("P1DT2H30M", timedelta(days=1, hours=2, minutes=30)),
        ("P1DT2H30M15S", timedelta(days=1, hours=2, minutes=30, seconds=15)),
        ("PT1H0M", timedelta(hours=1)),
        ("P007D", timedelta(days=7)),
        ("P400D", timedelta(days=400)),
        ("P399DT23H59M60S", timedelta(days=400)),
    ],
)
def test_accepted(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("P1Y", "years and months are not supported"),
        ("P2M", "years and months are not supported"),
        ("P1W", "weeks are not supported; use days (P7D)"),
        ("p1d", "upper case"),
        ("P1dT2h", "upper case"),
        ("PT1.5H", "fractions are not supported"),
        ("PT0,5S", "fractions are not supported"),
        ("P", "is not an ISO 8601 duration"),
        ("PT", "is not an ISO 8601 duration"),
        ("P1DT", "is not an ISO 8601 duration"),
        ("1D", "is not an ISO 8601 duration"),
        ("P1H", "is not an ISO 8601 duration"),
        ("PT1D", "is not an ISO 8601 duration"),
        ("+P1D", "is not an ISO 8601 duration"),
        (" P1D", "is not an ISO 8601 duration"),
        ("", "is not an ISO 8601 duration"),
        ("PT0S", "out of range: durations go from PT1S to P400D"),
        ("P401D", "out of range"),
        ("P400DT1S", "out of range"),
        ("P" + "9" * 5000 + "D", "far too long"),
        ("P999999999DT999999999H", "far too long"),
        ("-P1D", "cannot be negative"),
    ],
)
def test_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert reason in str(caught.value)


@pytest.mark.parametrize("value", [None, 7, 1.5, ["P1D"], b"P1D"])
def test_not_a_string(value: object) -> None:
    with pytest.raises(ValueError, match="must be an ISO 8601 duration string"):
        parse_duration(value)


def test_offsets_are_signed_and_bounded_by_magnitude() -> None:
    assert parse_duration_offset("-P1D") == timedelta(days=-1)
    assert parse_duration_offset("PT2H") == timedelta(hours=2)
    assert parse_duration_offset("-P400D") == -MAX_DURATION
    with pytest.raises(ValueError, match="out of range"):
        parse_duration_offset("-P401D")
    with pytest.raises(ValueError, match="out of range"):
        parse_duration_offset("-PT0S")


def test_custom_bounds() -> None:
    """Callers with other limits (journeys' waits, retention) pass their own."""
    assert parse_duration("PT0S", minimum=timedelta(0)) == timedelta(0)
    assert parse_duration("P900D", maximum=timedelta(days=1000)) == timedelta(days=900)
    with pytest.raises(ValueError, match="from P1D to P1000D"):
        parse_duration("PT1H", minimum=timedelta(days=1), maximum=timedelta(days=1000))


def test_format() -> None:
    assert format_duration(timedelta(days=1, hours=2, minutes=30)) == "P1DT2H30M"
    assert format_duration(timedelta(seconds=90)) == "PT1M30S"
    assert format_duration(timedelta(days=7)) == "P7D"
    assert format_duration(timedelta(0)) == "PT0S"
    assert format_duration(timedelta(hours=-36)) == "-P1DT12H"
    with pytest.raises(ValueError, match="fractional"):
        format_duration(timedelta(milliseconds=1500))


@settings(database=None)
@given(st.integers(min_value=int(MIN_DURATION.total_seconds()), max_value=int(MAX_DURATION.total_seconds())))
def test_format_parses_back(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value
    assert parse_duration_offset(format_duration(-value)) == -value
