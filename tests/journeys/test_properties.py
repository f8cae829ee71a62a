"""Property test of the engine: random inputs, replays, restarts and clock jumps against the guarantees of SPEC §10.

Hypothesis draws a journey (the SPEC example and others with loops, quiet hours, date waits and
goals that exit) and a run of inputs: history events, segment changes, API entries, timers, clock
jumps of a second to a month, timers exactly at and just before the due time, replays of earlier
inputs (the latest one among them), and restarts (the state goes through its encoding). After every input it checks that:

- no step runs twice (each instance's step sequence numbers and each message id appear once);
- no timer fires early (nothing timed of the step the instance waits at happens before its due
  time, and every due time set is after the moment it was set);
- an instance that reaches `exit` (or ends any other way) has ended, and nothing of it runs again;
- a running instance always waits for a due time (none stalls), and a replay changes nothing (a
  refused API entry with no state to remember it is refused again: an answer, not an effect).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.journeys.actions import Ended, Entered, Refused, SendMail, StepDone, UpdateAttributes
from streamapp.journeys.engine import Result, Versions, advance
from streamapp.journeys.inputs import ApiEntry, HistoryEvent, Input, SegmentEvent, Timer
from streamapp.journeys.state import InstanceState, decode_state, encode_state
from streamapp.segments.times import from_micros, to_micros
from tests.journeys.common import NOW, RECIPIENT, Record, View, example, versions

LOOP = example(
    entry=[{"history": "signup"}, {"api": True}, {"segment": "vip", "on": "enter"}],
    reentry="after_exit",
    exit={"segment": "vip", "on": "exit"},
    goal={"history": "purchase", "within": "P7D", "exit": True},
    quiet_hours={"from": "22:00", "to": "06:30"},
    steps=[
        {"id": "mail", "send": {"template": "tips"}},
        {
            "id": "ask",
            "wait_for": {"history": "mail.opened"},
            "timeout": "PT6H",
            "on_event": "mark",
            "on_timeout": "later",
        },
        {"id": "mark", "update": {"attributes": {"score": 1}}, "next": "later"},
        {"id": "later", "wait": {"until": "09:15"}},
        {"id": "again", "if": {"history": "purchase", "within": "P1D"}, "then": "stop", "else": "pick"},
        {"id": "pick", "split": [{"weight": 3, "next": "mail"}, {"weight": 1, "next": "birthday"}]},
        {"id": "birthday", "wait": {"attribute": "birthday", "offset": "-PT12H"}},
        {"id": "card", "send": {"template": "coupon"}, "next": "nap"},
        {"id": "nap", "wait": "PT20M", "next": "mail"},
        {"id": "stop", "exit": True},
    ],
)
JOURNEYS = [
    versions(example()),
    versions(LOOP),
    versions(example(reentry="never", quiet_hours={"from": "08:00", "to": "20:00"})),
]
EVENTS: list[Input] = [
    HistoryEvent("signup", Record()),
    HistoryEvent("purchase", Record(sku="SHOE-1")),
    HistoryEvent("return", Record()),
    HistoryEvent("mail.opened", Record()),
    SegmentEvent("vip", True),
    SegmentEvent("vip", False),
    ApiEntry({"code": "A"}),
]
#: How far before a due time a "near_due" timer fires: it must do nothing.
EARLY = [timedelta(microseconds=1), timedelta(seconds=1), timedelta(minutes=10)]
JUMPS = [timedelta(seconds=s) for s in (0, 1, 59, 3600, 4 * 3600, 86400, 3 * 86400, 30 * 86400)]

op = st.one_of(
    st.tuples(st.just("event"), st.integers(0, len(EVENTS) - 1)),
    st.tuples(st.just("timer"), st.just(0)),
    st.tuples(st.just("at_due"), st.just(0)),
    st.tuples(st.just("near_due"), st.integers(0, len(EARLY) - 1)),
    st.tuples(st.just("replay_last"), st.just(0)),
    st.tuples(st.just("jump"), st.integers(0, len(JUMPS) - 1)),
    st.tuples(st.just("replay"), st.integers(0, 50)),
    st.tuples(st.just("restart"), st.just(0)),
)
views = st.builds(
    lambda birthday, opened, vip: View(
        attributes={"birthday": birthday} if birthday else {},
        records={"mail.opened": [Record(time="2026-11-27T11:00:00+00:00")]} if opened else {},
        segments={"vip"} if vip else set(),
    ),
    st.sampled_from([None, "1990-11-28", "1985-02-29", "2027-01-15", "garbage"]),
    st.booleans(),
    st.booleans(),
)


class Checker:
    """The invariants over everything one recipient's instances did."""

    def __init__(self, journey: Versions) -> None:
        self.journey = journey
        self.seen_steps: set[tuple[int, int, str]] = set()
        self.seen_messages: set[str] = set()
        self.ended_runs: set[int] = set()

    def check(self, before: InstanceState | None, event: Input, now_us: int, result: Result) -> None:
        state = result.state
        run = before.run if before is not None else 0
        for action in result.actions:
            if isinstance(action, Entered):
                assert action.run == run + 1, "runs count up"
                run = action.run
                continue
            if isinstance(action, StepDone | SendMail | UpdateAttributes):
                assert run not in self.ended_runs, f"run {run} acted after it ended: {action}"
                kind = type(action).__name__
                assert (run, action.seq, kind) not in self.seen_steps, f"step ran twice: {action}"
                self.seen_steps.add((run, action.seq, kind))
                self.not_early(before, run, action, now_us)
            if isinstance(action, SendMail):
                assert action.message_id not in self.seen_messages, "a message id was made twice"
                self.seen_messages.add(action.message_id)
            if isinstance(action, StepDone) and action.outcome == "exit":
                assert any(isinstance(a, Ended) for a in result.actions), "an exit step ends its instance"
            if isinstance(action, Ended):
                self.ended_runs.add(run)
        if state is None:
            assert before is None
            return
        if state.run in self.ended_runs:
            assert not state.active and state.due == 0, "an ended instance stays ended"
        if state.active:
            assert state.due > now_us, "a running instance always waits for a due time after now"
            assert 0 <= state.step < len(self.journey.current.journey.steps)  # type: ignore[union-attr]

    @staticmethod
    def not_early(before: InstanceState | None, run: int, action: Any, now_us: int) -> None:
        """What the waiting step does when its time comes must not happen before its due time."""
        if before is None or not before.active or run != before.run or action.seq != before.seq:
            return
        timed = isinstance(action, SendMail) or (isinstance(action, StepDone) and action.outcome != "event")
        if timed:
            assert before.due <= now_us, f"{action} fired before {from_micros(before.due)}"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(JOURNEYS) - 1), views, st.lists(op, max_size=60))
def test_random_inputs_keep_every_guarantee(which: int, view: View, ops: list[tuple[str, int]]) -> None:
    journey = JOURNEYS[which]
    checker = Checker(journey)
    state: InstanceState | None = None
    now = NOW
    position = 0
    history: list[Input] = []
    for kind, arg in ops:
        if kind == "jump":
            now += JUMPS[arg]
            continue
        if kind == "restart":
            state = decode_state(encode_state(state)) if state is not None else None
            continue
        if kind in ("replay", "replay_last"):
            if not history:
                continue
            event = history[-1] if kind == "replay_last" else history[arg % len(history)]
            replayed = advance(journey, state, RECIPIENT, view, event, now)
            effects = [a for a in replayed.actions if not isinstance(a, Refused)]  # a refusal is only an answer
            assert effects == [] and replayed.state == state, "a replay changed something"
            continue
        if kind == "at_due":
            if state is None or not state.due:
                continue
            now = max(now, from_micros(state.due))
            event = Timer()
        elif kind == "near_due":
            if state is None or not state.due or from_micros(state.due) - EARLY[arg] < now:
                continue
            now = from_micros(state.due) - EARLY[arg]
            event = Timer()
        elif kind == "timer":
            event = Timer()
        else:
            position += 1
            template = EVENTS[arg]
            event = _positioned(template, position)
            history.append(event)
        result = advance(journey, state, RECIPIENT, view, event, now)
        checker.check(state, event, to_micros(now), result)
        note(f"journey {which}: {type(result.actions[-1]).__name__ if result.actions else 'nothing'}")
        if isinstance(event, Timer) and state is not None and state.due > to_micros(now):
            assert result.actions == () and result.state == state, "an early timer did something"
        state = result.state


def _positioned(event: Input, position: int) -> Input:
    if isinstance(event, HistoryEvent):
        return HistoryEvent(event.type, event.record, position)
    if isinstance(event, SegmentEvent):
        return SegmentEvent(event.segment, event.entered, position)
    assert isinstance(event, ApiEntry)
    return ApiEntry(event.properties, position)
