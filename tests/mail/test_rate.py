"""Tests for the token bucket of streamapp.mail.smtp, with an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from streamapp.mail.smtp import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hundred_sends_at_fifty_per_second_span_two_seconds() -> None:
    clock = Clock()
    bucket = TokenBucket(50, clock=clock)
    waits = [bucket.reserve() for _ in range(100)]
    assert waits[0] == 0
    assert waits[1] == pytest.approx(0.02)
    assert waits[-1] == pytest.approx(99 / 50)
    assert waits == sorted(waits)


def test_tokens_refill_with_time_up_to_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(10, burst=5, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0, 0, 0, 0, 0]
    assert bucket.reserve() == pytest.approx(0.1)
    clock.now += 0.2  # pays back the borrowed token and earns one
    assert bucket.reserve() == 0
    assert bucket.reserve() == pytest.approx(0.1)
    clock.now += 3600  # a long pause saves up no more than the burst
    assert [bucket.reserve() for _ in range(5)] == [0, 0, 0, 0, 0]
    assert bucket.reserve() == pytest.approx(0.1)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (10, 0.5)])
def test_invalid_settings(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
