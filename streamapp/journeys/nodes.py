"""The typed, immutable form of a journey definition (SPEC §10).

`definition.parse_journey` builds these from the JSON file; `engine.compile_journey` turns them
into what runs. Steps refer to each other by index (resolved from their ids at parse time, with
`next` defaults applied), so the engine never looks a name up; `END` as a target means "the
instance ends here" (the step after the last one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time, timedelta
from typing import Literal, TypeAlias

from streamapp.core.models import Priority
from streamapp.segments.nodes import HistoryLeaf, Node
from streamapp.settings import DeclaredProperty

#: The target of a step that ends the instance (the step after the last one).
END = -1

ReentryMode = Literal["never", "after_exit", "cooldown"]
STEP_KINDS: tuple[str, ...] = ("send", "wait", "wait_for", "if", "split", "update", "exit")


@dataclass(frozen=True, slots=True)
class HistoryTrigger:
    """A history event of one type, filtered by `where` (the `leaf` tests one record)."""

    history: str
    leaf: HistoryLeaf


@dataclass(frozen=True, slots=True)
class SegmentTrigger:
    """Entering (`on_enter`) or leaving a configured segment of the journey's database."""

    segment: str
    on_enter: bool


@dataclass(frozen=True, slots=True)
class ApiTrigger:
    """`POST /api/v1/journeys/{journey}/entries`."""


Trigger: TypeAlias = HistoryTrigger | SegmentTrigger | ApiTrigger


@dataclass(frozen=True, slots=True)
class Reentry:
    """`never`, `after_exit`, or `cooldown` (counted from the previous instance's entry)."""

    mode: ReentryMode = "after_exit"
    cooldown: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Goal:
    """A conversion: `trigger` happening within `within` of the entry; ends the instance when `exit`."""

    trigger: Trigger
    within: timedelta
    exit: bool = False


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times [start, end) in which no send goes out; `start > end` wraps midnight."""

    start: time
    end: time


# -- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    template: str
    priority: Priority = "campaign"
    track: bool = True
    next: int = END


@dataclass(frozen=True, slots=True)
class WaitDuration:
    """Wait a fixed duration."""

    duration: timedelta
    next: int = END


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Wait for the next local time of day (strictly after the moment the step starts)."""

    at: time
    next: int = END


@dataclass(frozen=True, slots=True)
class WaitAttribute:
    """Wait for a date or date-time attribute plus `offset`; a date's past moment means its next anniversary."""

    attribute: str
    type: Literal["date", "datetime"]
    offset: timedelta = timedelta(0)
    next: int = END


@dataclass(frozen=True, slots=True)
class WaitForEvent:
    """Wait for `trigger` (then `on_event`) at most `timeout` (then `on_timeout`)."""

    trigger: HistoryTrigger | SegmentTrigger
    timeout: timedelta
    on_event: int = END
    on_timeout: int = END


@dataclass(frozen=True, slots=True)
class If:
    condition: Node
    then: int = END
    otherwise: int = END


@dataclass(frozen=True, slots=True)
class Branch:
    weight: float
    next: int


@dataclass(frozen=True, slots=True)
class Split:
    branches: tuple[Branch, ...]


@dataclass(frozen=True, slots=True)
class Update:
    """Attributes already coerced to their stored form, as an upsert would store them."""

    attributes: tuple[tuple[str, object], ...]
    next: int = END


@dataclass(frozen=True, slots=True)
class Exit:
    pass


Wait: TypeAlias = WaitDuration | WaitUntil | WaitAttribute
Action: TypeAlias = Send | Wait | WaitForEvent | If | Split | Update | Exit


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    action: Action


@dataclass(frozen=True, slots=True)
class Journey:
    """A valid journey definition; `entries` holds at most one ApiTrigger."""

    name: str
    database: str
    entries: tuple[Trigger, ...]
    steps: tuple[Step, ...]
    reentry: Reentry = Reentry()
    exit: Trigger | None = None
    goal: Goal | None = None
    quiet_hours: QuietHours | None = None
    #: Declared properties of API entries (None: none declared, any accepted), as a trigger's.
    properties: dict[str, DeclaredProperty] | None = None

    @property
    def api_entry(self) -> bool:
        return any(isinstance(entry, ApiTrigger) for entry in self.entries)


def targets(action: Action) -> tuple[int, ...]:
    """The steps `action` may lead to (END included)."""
    if isinstance(action, Send | WaitDuration | WaitUntil | WaitAttribute | Update):
        return (action.next,)
    if isinstance(action, WaitForEvent):
        return (action.on_event, action.on_timeout)
    if isinstance(action, If):
        return (action.then, action.otherwise)
    if isinstance(action, Split):
        return tuple(branch.next for branch in action.branches)
    return ()


def pauses(action: Action) -> bool:
    """Whether the step always ends the current run: a loop through it cannot spin at once.

    A date-time attribute wait does not: its moment may be past already, then it goes on at once (a
    date's past moment moves to its next anniversary, so that one does).
    """
    if isinstance(action, WaitAttribute):
        return action.type == "date"
    return isinstance(action, WaitDuration | WaitUntil | WaitForEvent)
