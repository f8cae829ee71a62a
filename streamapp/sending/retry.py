"""Back-off and expiry of deferred messages (SPEC §6), as pure functions of the settings."""

from __future__ import annotations

from datetime import datetime, timedelta

from streamapp.core.clock import parse_time
from streamapp.settings import SmtpSettings


def backoff_seconds(smtp: SmtpSettings, attempts: int) -> float:
    """Wait after the `attempts`-th failed attempt: initial, doubled each time, capped at retry_max."""
    exponent = max(0, attempts - 1)
    if exponent > 60:  # 2**60 already exceeds any sensible maximum
        return smtp.retry_max_seconds
    return float(min(smtp.retry_initial_seconds * 2.0**exponent, smtp.retry_max_seconds))


def expired(smtp: SmtpSettings, created_at: str, now: datetime) -> bool:
    return (now - parse_time(created_at)).total_seconds() >= smtp.expiry_seconds


def next_attempt(smtp: SmtpSettings, attempts: int, now: datetime) -> datetime:
    return now + timedelta(seconds=backoff_seconds(smtp, attempts))
