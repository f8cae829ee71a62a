"""Local times of journeys: next local time, quiet windows, date attributes, recipient zones."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from streamapp.journeys.nodes import QuietHours, WaitAttribute
from streamapp.journeys.times import attribute_due, next_local, quiet_until, zone_named

TZ = ZoneInfo("Europe/Stockholm")


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).astimezone(UTC)


@pytest.mark.parametrize(
    ("at", "now", "expected"),
    [
        (time(9), "2026-11-27T08:59:59", "2026-11-27T09:00"),
        (time(9), "2026-11-27T09:00", "2026-11-28T09:00"),  # strictly after now
        (time(2, 30), "2026-03-28T12:00", "2026-03-29T03:30"),  # skipped by DST: just after the gap
        (time(2, 30), "2026-10-24T12:00", "2026-10-25T02:30"),  # repeated by DST: the first one
        (time(0), "2026-12-31T23:00", "2027-01-01T00:00"),
    ],
)
def test_next_local(at: time, now: str, expected: str) -> None:
    found = next_local(at, local(now), TZ)
    assert found > local(now)
    if at == time(2, 30) and now.startswith("2026-03"):
        assert found == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    elif at == time(2, 30):
        assert found == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first of the two
    else:
        assert found == local(expected)


def test_quiet_windows_end_at_their_local_end() -> None:
    night = QuietHours(time(21), time(8))
    assert quiet_until(night, local("2026-11-27T21:00"), TZ) == local("2026-11-28T08:00")
    assert quiet_until(night, local("2026-11-28T07:59:59"), TZ) == local("2026-11-28T08:00")
    assert quiet_until(night, local("2026-11-28T08:00"), TZ) is None
    assert quiet_until(night, local("2026-11-28T20:59:59"), TZ) is None
    lunch = QuietHours(time(12), time(13))
    assert quiet_until(lunch, local("2026-11-27T12:30"), TZ) == local("2026-11-27T13:00")
    assert quiet_until(lunch, local("2026-11-27T13:00"), TZ) is None
    assert quiet_until(lunch, local("2026-11-27T11:59"), TZ) is None


def test_a_quiet_end_the_clock_skips_still_ends_the_window() -> None:
    window = QuietHours(time(1), time(2, 30))  # 02:30 does not exist on 2026-03-29
    end = quiet_until(window, local("2026-03-29T01:30"), TZ)
    assert end is not None and quiet_until(window, end, TZ) is None


def test_date_attribute_waits() -> None:
    birthday = WaitAttribute("birthday", "date", timedelta(days=-1))
    now = local("2026-02-27T12:00")
    assert attribute_due(birthday, "2000-02-29", now, TZ) == local("2026-02-27T00:00") + timedelta(days=365)
    assert attribute_due(birthday, "2000-03-01", now, TZ) == local("2026-02-28T00:00")  # 2026 has no Feb 29
    assert attribute_due(birthday, "2000-02-29", local("2028-02-27T12:00"), TZ) == local("2028-02-28T00:00")
    far = WaitAttribute("birthday", "date", timedelta(days=-400))
    due = attribute_due(far, "1990-06-01", now, TZ)
    assert due is not None and due > now and due + timedelta(days=400) == local("2027-06-01T00:00")
    assert attribute_due(birthday, "9999-12-31", now, TZ) == local("9999-12-30T00:00")
    assert attribute_due(birthday, 20000101, now, TZ) is None


def test_datetime_attribute_waits() -> None:
    renewal = WaitAttribute("renewal", "datetime", timedelta(hours=-2))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert attribute_due(renewal, "2026-01-02T10:00:00+00:00", now, TZ) == datetime(2026, 1, 2, 8, tzinfo=UTC)
    assert attribute_due(renewal, "2026-01-02T10:00:00", now, TZ) == local("2026-01-02T08:00")
    assert attribute_due(renewal, "2025-01-02T10:00:00+00:00", now, TZ) == now
    assert attribute_due(renewal, "soon", now, TZ) is None


@pytest.mark.parametrize("name", ["", "Not/AZone", "../../etc/passwd", "/etc/localtime", "x" * 100, "Europe/../UTC"])
def test_a_recipient_zone_that_names_no_zone_is_none(name: str) -> None:
    assert zone_named(name) is None


def test_a_recipient_zone() -> None:
    assert zone_named("Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
