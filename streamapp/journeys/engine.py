"""The journey engine: one input for one recipient's instance in, the new state and actions out.

Pure: no clock, no I/O. The caller (the agent that owns the recipient's partition) passes `now`,
the recipient's view and its stored `InstanceState`, stores the returned state, then carries out
the actions. Rules (SPEC §10):

- **Each step runs once.** Every step an instance starts takes the next `seq`, recorded in the
  returned state together with what the step asks for; a send's message id derives from the
  journey, recipient, instance and `seq`. An input whose `position` is not beyond the state's is
  a replay and changes nothing; a timer does nothing before the state's due time, and once fired
  the due time has moved on. So storing the state before acting makes every replay a no-op, and
  acting before a crash lost the state repeats at most the in-flight sends, with the same ids.
- **Timers never fire early**, and an input arriving after a due time first completes what was
  due (a late timer and an event in the same instant keep their order in time).
- **Exit and goal.** An event is first the goal (counted once per instance, within `within` of the
  entry, also after the last step; with `"exit": true` it ends a running instance), then the exit
  event, then what a `wait_for` waits for. An event that ended an instance does not start a new
  one.
- **Entries** start an instance on the current version when none runs and `reentry` allows it
  (`never`: one instance per recipient ever; `after_exit`; `cooldown`: since the previous entry).
  An API entry that cannot enter gets `Refused` (409). Running instances stay on their version.
- **Quiet hours**: a send that comes due inside the window waits for the window's end, in the
  recipient's zone (`timezone` attribute) or the service zone.
- A step after an `update` in the same run sees the updated attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import msgspec

from streamapp.journeys import ids
from streamapp.journeys.actions import (
    Action,
    Ended,
    EndReason,
    Entered,
    GoalReached,
    Refused,
    SendMail,
    StepDone,
    UpdateAttributes,
)
from streamapp.journeys.graph import check_steps
from streamapp.journeys.inputs import ApiEntry, HistoryEvent, Input, SegmentEvent, Timer
from streamapp.journeys.nodes import (
    END,
    ApiTrigger,
    Exit,
    HistoryTrigger,
    If,
    Journey,
    SegmentTrigger,
    Send,
    Split,
    Trigger,
    Update,
    WaitAttribute,
    WaitDuration,
    WaitForEvent,
    WaitUntil,
)
from streamapp.journeys.state import END_REASONS, InstanceState
from streamapp.journeys.times import attribute_due, next_local, quiet_until, zone_named
from streamapp.segments.evaluate import Compiled, compile_definition
from streamapp.segments.times import from_micros, to_micros
from streamapp.segments.view import HistoryRecordView, RecipientView

__all__ = ["CompiledJourney", "Recipient", "Result", "Versions", "advance", "compile_journey"]

Matcher: TypeAlias = Callable[[Input, datetime], bool]


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whose instance it is: the recipient key (`database/originalId`) and its partition."""

    key: bytes
    partition: int


@dataclass(frozen=True)
class CompiledJourney:
    """One version of a journey, ready to run: triggers and conditions compiled for the service zone."""

    journey: Journey
    version: int
    zone: ZoneInfo
    #: The recipient attribute naming its time zone (`timezone` when the database declares it).
    zone_attribute: str | None
    entries: tuple[Matcher, ...]
    exit: Matcher | None
    goal: Matcher | None
    waits: Mapping[int, Matcher]
    conditions: Mapping[int, Compiled]
    #: History types and segment names any trigger of this version listens to.
    history_types: frozenset[str]
    segments: frozenset[str]

    def zone_for(self, view: RecipientView) -> ZoneInfo:
        if self.zone_attribute is not None:
            name = view.attributes.get(self.zone_attribute)
            if isinstance(name, str):
                return zone_named(name) or self.zone
        return self.zone


def compile_journey(
    journey: Journey, version: int, zone: ZoneInfo, zone_attribute: str | None = None
) -> CompiledJourney:
    """`journey` compiled; ValueError if its step graph is wrong (parse_journey refuses such a journey)."""
    problems = check_steps(journey.steps)
    if problems:
        raise ValueError("; ".join(f"{path}: {message}" for path, message in problems))
    triggers = [*journey.entries, journey.exit, journey.goal.trigger if journey.goal else None]
    waits = {i: s.action.trigger for i, s in enumerate(journey.steps) if isinstance(s.action, WaitForEvent)}
    listened = [t for t in [*triggers, *waits.values()] if t is not None]
    return CompiledJourney(
        journey,
        version,
        zone,
        zone_attribute,
        tuple(_matcher(entry, zone) for entry in journey.entries),
        _matcher(journey.exit, zone) if journey.exit else None,
        _matcher(journey.goal.trigger, zone) if journey.goal else None,
        {i: _matcher(trigger, zone) for i, trigger in waits.items()},
        {
            i: compile_definition(s.action.condition, zone)
            for i, s in enumerate(journey.steps)
            if isinstance(s.action, If)
        },
        frozenset(t.history for t in listened if isinstance(t, HistoryTrigger)),
        frozenset(t.segment for t in listened if isinstance(t, SegmentTrigger)),
    )


@dataclass(frozen=True)
class Versions:
    """The versions of journey `name` a worker knows; `current` (None: retired) takes new entries."""

    name: str
    current: CompiledJourney | None
    older: Mapping[int, CompiledJourney] = field(default_factory=dict)

    def get(self, version: int) -> CompiledJourney | None:
        if self.current is not None and self.current.version == version:
            return self.current
        return self.older.get(version)


@dataclass(frozen=True)
class Result:
    """The state to store (None: there is none, nothing to store) and the actions, in order."""

    state: InstanceState | None
    actions: tuple[Action, ...] = ()

    @property
    def due(self) -> datetime | None:
        """When the instance wants a Timer input, if it waits for one."""
        return from_micros(self.state.due) if self.state is not None and self.state.due else None


def advance(
    versions: Versions,
    state: InstanceState | None,
    recipient: Recipient,
    view: RecipientView,
    event: Input,
    now: datetime,
) -> Result:
    """Apply `event` at `now` to the recipient's instance `state` (None: never entered)."""
    now = _utc(now)
    position = event.position
    if state is not None and position is not None and position <= state.position:
        return Result(state)
    actions: list[Action] = []
    ended_by_event = False
    if state is not None and state.active:
        compiled = versions.get(state.version)
        fits = compiled is not None and 0 <= state.step < len(compiled.journey.steps)  # else not this version's state
        run = _Run(compiled, state, recipient, view, now, actions) if compiled and fits else None
        if run is None:
            actions.append(Ended(ids.instance_id(versions.name, recipient.key, state.run), "version"))
            state = msgspec.structs.replace(state, step=END, due=0, ended=END_REASONS.index("version") + 1)
        else:
            ended_by_event = run.handle(event)
            state = run.state
    if state is not None and not state.active and not ended_by_event:
        state = _late_goal(versions.get(state.version), state, recipient, event, now, actions)
    if not ended_by_event and (state is None or not state.active):
        state = _enter(versions.current, state, recipient, view, event, now, actions)
    elif isinstance(event, ApiEntry):
        actions.append(Refused("the recipient is in this journey already"))
    if state is not None and position is not None:
        state = msgspec.structs.replace(state, position=position)
    return Result(state, tuple(actions))


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(UTC)


def _within_goal(compiled: CompiledJourney, state: InstanceState, now: datetime) -> bool:
    goal = compiled.journey.goal
    return goal is not None and not state.goal and now <= from_micros(state.entered) + goal.within


def _late_goal(
    compiled: CompiledJourney | None,
    state: InstanceState,
    recipient: Recipient,
    event: Input,
    now: datetime,
    actions: list[Action],
) -> InstanceState:
    """A conversion after the instance ended, still inside the goal's window."""
    if compiled is None or compiled.goal is None or not _within_goal(compiled, state, now):
        return state
    if not compiled.goal(event, now):
        return state
    actions.append(GoalReached(ids.instance_id(compiled.journey.name, recipient.key, state.run)))
    return msgspec.structs.replace(state, goal=True)


def _enter(
    current: CompiledJourney | None,
    previous: InstanceState | None,
    recipient: Recipient,
    view: RecipientView,
    event: Input,
    now: datetime,
    actions: list[Action],
) -> InstanceState | None:
    """A new instance when `event` is an entry of the current version and re-entry allows it."""
    if current is None or not any(enters(event, now) for enters in current.entries):
        if isinstance(event, ApiEntry):
            actions.append(Refused("the journey takes no API entries"))
        return previous
    refusal = _reentry_refusal(current, previous, now)
    if refusal is not None:
        if isinstance(event, ApiEntry):
            actions.append(Refused(refusal))
        return previous
    run = previous.run + 1 if previous else 1
    properties = dict(event.properties) if isinstance(event, ApiEntry) else {}
    state = InstanceState(current.version, run, END, 0, to_micros(now), properties=properties)
    if previous is not None:
        state = msgspec.structs.replace(state, position=previous.position)
    actions.append(Entered(ids.instance_id(current.journey.name, recipient.key, run), run))
    runner = _Run(current, state, recipient, view, now, actions)
    runner.go(0)
    return runner.state


def _reentry_refusal(current: CompiledJourney, previous: InstanceState | None, now: datetime) -> str | None:
    if previous is None:
        return None
    rule = current.journey.reentry
    if rule.mode == "never":
        return "the journey allows no re-entry"
    if rule.mode == "cooldown" and rule.cooldown is not None:
        allowed = from_micros(previous.entered) + rule.cooldown
        if now < allowed:
            return f"re-entry is allowed from {allowed.isoformat(timespec='seconds')}"
    return None


class _Run:
    """One input's work on one running instance: the state as it moves, and the actions it asks for."""

    def __init__(
        self,
        compiled: CompiledJourney,
        state: InstanceState,
        recipient: Recipient,
        view: RecipientView,
        now: datetime,
        actions: list[Action],
    ) -> None:
        self.compiled, self.state, self.recipient, self.now, self.actions = compiled, state, recipient, now, actions
        self.view: RecipientView = view
        self.tz = compiled.zone_for(view)
        self.steps = compiled.journey.steps
        self.instance_id = ids.instance_id(compiled.journey.name, recipient.key, state.run)

    def handle(self, event: Input) -> bool:
        """Fire what is due, then apply `event`; True when the event itself ended the instance."""
        self.fire_due()
        if isinstance(event, Timer | ApiEntry) or not self.state.active:
            return False
        return self.on_event(event)

    def fire_due(self) -> None:
        state = self.state
        if not state.active or state.due == 0 or from_micros(state.due) > self.now:
            return
        index = state.step
        step = self.steps[index]
        action = step.action
        self.state = msgspec.structs.replace(state, due=0)
        if isinstance(action, Send):
            follow = self.execute(index)  # the send quiet hours held back
            if follow is not None:
                self.go(follow)
        elif isinstance(action, WaitForEvent):
            self.done(step.id, "timeout")
            self.go(action.on_timeout)
        elif isinstance(action, WaitDuration | WaitUntil | WaitAttribute):
            self.done(step.id, "waited")
            self.go(action.next)

    def on_event(self, event: HistoryEvent | SegmentEvent) -> bool:
        compiled, now = self.compiled, self.now
        if compiled.goal is not None and _within_goal(compiled, self.state, now) and compiled.goal(event, now):
            self.actions.append(GoalReached(self.instance_id))
            self.state = msgspec.structs.replace(self.state, goal=True)
            if compiled.journey.goal is not None and compiled.journey.goal.exit:
                self.end("goal", self.steps[self.state.step].id)
                return True
        if compiled.exit is not None and compiled.exit(event, now):
            self.end("exited", self.steps[self.state.step].id)
            return True
        index = self.state.step
        waiting = compiled.waits.get(index)
        if waiting is not None and waiting(event, now):
            action = self.steps[index].action
            assert isinstance(action, WaitForEvent)
            self.state = msgspec.structs.replace(self.state, due=0)
            self.done(self.steps[index].id, "event")
            self.go(action.on_event)
        return False

    def go(self, index: int) -> None:
        """Start steps from `index` until one pauses or the instance ends."""
        for _ in range(len(self.steps) + 1):  # the graph has no loop without a pause
            if index == END:
                self.end("completed", None)
                return
            self.state = msgspec.structs.replace(self.state, step=index, seq=self.state.seq + 1, due=0)
            follow = self.execute(index)
            if follow is None:
                return
            index = follow
        raise AssertionError("a journey run did not pause")  # pragma: no cover - check_steps prevents it

    def execute(self, index: int) -> int | None:
        """Carry out step `index` (already started); the step to go on with, or None when it paused or ended."""
        step = self.steps[index]
        action = step.action
        if isinstance(action, Send):
            return self.send(step.id, action)
        if isinstance(action, WaitDuration):
            return self.pause(self.now + action.duration)
        if isinstance(action, WaitUntil):
            return self.pause(next_local(action.at, self.now, self.tz))
        if isinstance(action, WaitAttribute):
            return self.wait_attribute(step.id, action)
        if isinstance(action, WaitForEvent):
            return self.pause(self.now + action.timeout)
        if isinstance(action, If):
            value = self.compiled.conditions[index].matches(self.view, self.now)
            self.done(step.id, "then" if value else "else")
            return action.then if value else action.otherwise
        if isinstance(action, Split):
            weights = [branch.weight for branch in action.branches]
            chosen = ids.split_draw(self.compiled.journey.name, step.id, self.recipient.key, weights)
            self.done(step.id, f"branch-{chosen + 1}")
            return action.branches[chosen].next
        if isinstance(action, Update):
            return self.update(step.id, action)
        assert isinstance(action, Exit)
        self.done(step.id, "exit")
        self.end("completed", step.id)
        return None

    def send(self, step: str, action: Send) -> int | None:
        quiet = self.compiled.journey.quiet_hours
        until = quiet_until(quiet, self.now, self.tz) if quiet is not None else None
        if until is not None:
            return self.pause(until)
        state, journey = self.state, self.compiled.journey.name
        entered_ms = state.entered // 1000
        message = ids.message_id(
            journey, self.recipient.key, self.recipient.partition, state.run, entered_ms, step, state.seq
        )
        source = f"journey:{journey}/{step}"
        mail = SendMail(
            step, state.seq, action.template, action.priority, action.track, message, source, state.properties
        )
        self.actions.append(mail)
        self.done(step, "sent")
        return action.next

    def wait_attribute(self, step: str, action: WaitAttribute) -> int | None:
        due = attribute_due(action, self.view.attributes.get(action.attribute), self.now, self.tz)
        if due is None:
            self.done(step, "no-date")
            self.end("no-date", step)
            return None
        if due <= self.now:
            self.done(step, "waited")
            return action.next
        return self.pause(due)

    def update(self, step: str, action: Update) -> int:
        attributes = dict(action.attributes)
        self.actions.append(UpdateAttributes(step, self.state.seq, attributes))
        self.view = _Updated(self.view, attributes)
        self.done(step, "updated")
        return action.next

    def pause(self, due: datetime) -> int | None:
        """Wait at the current step until `due` (strictly after now); None: the run stops here."""
        self.state = msgspec.structs.replace(self.state, due=max(to_micros(due), to_micros(self.now) + 1))
        return None

    def done(self, step: str, outcome: str) -> None:
        self.actions.append(StepDone(step, self.state.seq, outcome))

    def end(self, reason: EndReason, step: str | None) -> None:
        self.actions.append(Ended(self.instance_id, reason, step))
        self.state = msgspec.structs.replace(self.state, step=END, due=0, ended=END_REASONS.index(reason) + 1)


# -- triggers ---------------------------------------------------------------------------------


def _matcher(trigger: Trigger, zone: ZoneInfo) -> Matcher:
    if isinstance(trigger, ApiTrigger):
        return lambda event, now: isinstance(event, ApiEntry)
    if isinstance(trigger, SegmentTrigger):
        segment, entered = trigger.segment, trigger.on_enter
        return lambda event, now: (
            isinstance(event, SegmentEvent) and event.segment == segment and event.entered == entered
        )
    kind = trigger.history
    test = compile_definition(trigger.leaf, zone)

    def matches(event: Input, now: datetime) -> bool:
        if not isinstance(event, HistoryEvent) or event.type != kind:
            return False
        return not trigger.leaf.where or test.matches(_OneRecord(kind, event.record), now, _no_segments)

    return matches


def _no_segments(name: str) -> bool:
    return False


class _OneRecord:
    """A view holding only the event's record, so a `where` is the segment condition's own test."""

    def __init__(self, kind: str, record: HistoryRecordView) -> None:
        self.kind, self.record = kind, record
        self.email: str | None = None
        self.status = "active"
        self.createdAt = self.updatedAt = ""
        self.attributes: Mapping[str, Any] = {}

    def history(self, type: str) -> Sequence[HistoryRecordView]:
        return (self.record,) if type == self.kind else ()

    def member_of(self, segment: str) -> bool:
        return False


class _Updated:
    """The recipient as an `update` step left it, for the steps after it in the same run."""

    def __init__(self, view: RecipientView, attributes: Mapping[str, Any]) -> None:
        self.base = view
        self.attributes: Mapping[str, Any] = {**view.attributes, **attributes}
        self.email, self.status = view.email, view.status
        self.createdAt, self.updatedAt = view.createdAt, view.updatedAt

    def history(self, type: str) -> Sequence[HistoryRecordView]:
        return self.base.history(type)

    def member_of(self, segment: str) -> bool:
        return self.base.member_of(segment)
