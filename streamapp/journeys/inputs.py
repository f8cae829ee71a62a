"""What the engine reacts to: an API entry, a history event, a segment change, or a timer.

`position` is the input's place in the recipient's ordered stream (the partition offset and index
the agent applies it at, as recipients' `seq`): the state keeps the highest one applied, so a
replayed input after a crash changes nothing. A timer has none: it is idempotent by its due time
(once fired, the state's due time has moved on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from streamapp.segments.view import HistoryRecordView

__all__ = ["ApiEntry", "HistoryEvent", "Input", "SegmentEvent", "Timer"]


@dataclass(frozen=True, slots=True)
class ApiEntry:
    """`POST /api/v1/journeys/{journey}/entries`; `properties` already checked against the declared ones."""

    properties: Mapping[str, Any] = field(default_factory=dict)
    position: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """A history record of `type` added to the recipient (API, file, or streamapp's own `mail.*`)."""

    type: str
    record: HistoryRecordView
    position: int | None = None


@dataclass(frozen=True, slots=True)
class SegmentEvent:
    """The recipient entered (`entered`) or left `segment`."""

    segment: str
    entered: bool
    position: int | None = None


@dataclass(frozen=True, slots=True)
class Timer:
    """The clock reached the instance's due time (or later); earlier it does nothing."""

    position: None = None


Input: TypeAlias = ApiEntry | HistoryEvent | SegmentEvent | Timer
