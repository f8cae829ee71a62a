"""The journey engine step by step (SPEC §10): entries, every step type, exits, goals, quiet hours, replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamapp.core.ids import partition_of
from streamapp.journeys.actions import Ended, Entered, Refused, SendMail, StepDone, UpdateAttributes
from streamapp.journeys.engine import Recipient, Result, Versions, advance
from streamapp.journeys.inputs import ApiEntry, HistoryEvent, Input, SegmentEvent, Timer
from streamapp.journeys.state import InstanceState, decode_state, encode_state
from streamapp.segments.times import from_micros
from tests.journeys.common import NOW, RECIPIENT, TZ, Record, View, compiled, example, versions

SIGNUP = HistoryEvent("signup", Record())
PURCHASE = HistoryEvent("purchase", Record(sku="SHOE-1"))
RETURN = HistoryEvent("return", Record())


def run(
    journey: Versions, state: InstanceState | None, event: Input, now: datetime, view: View | None = None
) -> Result:
    return advance(journey, state, RECIPIENT, view or View(), event, now)


def kinds(result: Result) -> list[str]:
    """The actions in a short form: `send:hello`, `done:pause:waited`, `ended:completed`, ..."""
    out = []
    for action in result.actions:
        if isinstance(action, SendMail):
            out.append(f"send:{action.step}")
        elif isinstance(action, StepDone):
            out.append(f"done:{action.step}:{action.outcome}")
        elif isinstance(action, Ended):
            out.append(f"ended:{action.reason}")
        elif isinstance(action, UpdateAttributes):
            out.append(f"update:{action.step}")
        else:
            out.append(type(action).__name__.lower())
    return out


def steps_only(raw_steps: list[dict[str, Any]], **changes: Any) -> Versions:
    defaults: dict[str, Any] = {"reentry": None, "exit": None, "goal": None, "quiet_hours": None}
    return versions(example(steps=raw_steps, **{**defaults, **changes}))


SPEC = versions(example())


# -- the SPEC example, walked through ---------------------------------------------------------------


def test_entry_sends_the_first_mail_and_waits() -> None:
    result = run(SPEC, None, SIGNUP, NOW)
    assert kinds(result) == ["entered", "send:hello", "done:hello:sent"]
    entered, mail = result.actions[0], result.actions[1]
    assert isinstance(entered, Entered) and entered.run == 1 and len(entered.instance_id) == 20
    assert isinstance(mail, SendMail) and mail.template == "welcome" and mail.priority == "batch" and mail.track
    assert mail.source == "journey:j/hello" and mail.seq == 1
    assert partition_of(mail.message_id) == RECIPIENT.partition
    assert result.state is not None and result.state.step == 1 and result.state.active
    assert result.due == NOW + timedelta(days=2)


def test_a_timer_never_fires_early_and_fires_once() -> None:
    waiting = run(SPEC, None, SIGNUP, NOW).state
    early = run(SPEC, waiting, Timer(), NOW + timedelta(days=2) - timedelta(microseconds=1))
    assert early.actions == () and early.state == waiting
    opened = View(records={"mail.opened": [Record(time="2026-11-28T10:00:00+00:00")]})
    due = run(SPEC, waiting, Timer(), NOW + timedelta(days=2), opened)
    assert kinds(due) == ["done:pause:waited", "done:engaged:then", "send:tips", "done:tips:sent"]
    assert due.state is not None and due.state.step == 5 and due.due == NOW + timedelta(days=5)
    again = run(SPEC, due.state, Timer(), NOW + timedelta(days=2, seconds=1), opened)
    assert again.actions == () and again.state == due.state


def test_if_takes_else_without_an_open() -> None:
    waiting = run(SPEC, None, SIGNUP, NOW).state
    result = run(SPEC, waiting, Timer(), NOW + timedelta(days=3))
    assert kinds(result)[:3] == ["done:pause:waited", "done:engaged:else", "send:nudge"]
    assert result.due == NOW + timedelta(days=6)  # the wait_for starts when the late timer fired


def at_ask() -> InstanceState:
    state = run(SPEC, None, SIGNUP, NOW).state
    state = run(SPEC, state, Timer(), NOW + timedelta(days=2)).state
    assert state is not None and state.step == 5
    return state


def test_wait_for_takes_the_event_before_the_timeout_and_the_goal_counts_first() -> None:
    result = run(SPEC, at_ask(), PURCHASE, NOW + timedelta(days=3))
    assert kinds(result) == [
        "goalreached",
        "done:ask:event",
        "send:thanks",
        "done:thanks:sent",
        "done:end:exit",
        "ended:completed",
    ]
    assert result.state is not None and result.state.goal and not result.state.active and result.due is None


def test_wait_for_times_out_into_the_split() -> None:
    outcomes = set()
    for n in range(40):
        who = Recipient(f"members/r{n}".encode(), 1)
        state = advance(SPEC, None, who, View(), SIGNUP, NOW).state
        state = advance(SPEC, state, who, View(), Timer(), NOW + timedelta(days=2)).state
        result = advance(SPEC, state, who, View(), Timer(), NOW + timedelta(days=5))
        names = kinds(result)
        assert names[0] == "done:ask:timeout"
        if names[1] == "done:offer:branch-1":
            assert names[2:] == ["update:coupon", "done:coupon:updated", "send:send-coupon",
                                 "done:send-coupon:sent", "done:end:exit", "ended:completed"]  # fmt: skip
        else:
            assert names[1:] == ["done:offer:branch-2", "done:end:exit", "ended:completed"]
        outcomes.add(names[1])
    assert outcomes == {"done:offer:branch-1", "done:offer:branch-2"}


def test_an_event_after_the_timeout_finds_the_timeout_taken_first() -> None:
    result = run(SPEC, at_ask(), PURCHASE, NOW + timedelta(days=6))
    names = kinds(result)
    assert names[0] == "done:ask:timeout" and "done:ask:event" not in names
    assert "goalreached" in names  # the instance ended on the timeout path; the purchase still converts


def test_exit_event_ends_the_instance_mid_wait() -> None:
    waiting = run(SPEC, None, SIGNUP, NOW).state
    result = run(SPEC, waiting, RETURN, NOW + timedelta(hours=1))
    assert kinds(result) == ["ended:exited"]
    ended = result.actions[0]
    assert isinstance(ended, Ended) and ended.step == "pause"
    assert result.state is not None and not result.state.active and result.due is None
    assert run(SPEC, result.state, Timer(), NOW + timedelta(days=2)).actions == ()


def test_an_event_that_is_goal_and_exit_counts_the_goal_first() -> None:
    both = versions(example(exit={"history": "purchase"}))
    result = run(both, at_ask_of(both), PURCHASE, NOW + timedelta(days=3))
    assert kinds(result) == ["goalreached", "ended:exited"]
    goal_exit = versions(example(goal={"history": "purchase", "within": "P14D", "exit": True}))
    result = run(goal_exit, at_ask_of(goal_exit), PURCHASE, NOW + timedelta(days=3))
    assert kinds(result) == ["goalreached", "ended:goal"]


def at_ask_of(journey: Versions) -> InstanceState | None:
    state = run(journey, None, SIGNUP, NOW).state
    return run(journey, state, Timer(), NOW + timedelta(days=2)).state


def test_a_goal_counts_once_within_its_window_even_after_the_last_step() -> None:
    journey = steps_only([{"id": "s", "send": {"template": "tips"}}], goal={"history": "purchase", "within": "P14D"})
    done = run(journey, None, SIGNUP, NOW)
    assert kinds(done) == ["entered", "send:s", "done:s:sent", "ended:completed"]
    goal = run(journey, done.state, PURCHASE, NOW + timedelta(days=13))
    assert kinds(goal) == ["goalreached"]
    assert run(journey, goal.state, PURCHASE, NOW + timedelta(days=13, hours=1)).actions == ()
    assert run(journey, done.state, PURCHASE, NOW + timedelta(days=14, seconds=1)).actions == ()


def test_a_goal_outside_the_window_does_not_count() -> None:
    result = run(SPEC, at_ask(), PURCHASE, NOW + timedelta(days=14, seconds=1))
    assert "goalreached" not in kinds(result)


# -- entries and re-entry ------------------------------------------------------------------------------


def finished(journey: Versions, at: datetime = NOW) -> InstanceState:
    state = run(journey, None, SIGNUP, at).state
    assert state is not None and not state.active
    return state


ONE_SEND = [{"id": "s", "send": {"template": "tips"}}]


def test_reentry_after_exit_is_the_default_and_counts_runs() -> None:
    journey = steps_only(ONE_SEND)
    again = run(journey, finished(journey), SIGNUP, NOW + timedelta(seconds=1))
    assert kinds(again)[0] == "entered" and again.state is not None and again.state.run == 2
    first = run(journey, None, SIGNUP, NOW).actions[1]
    second = again.actions[1]
    assert isinstance(first, SendMail) and isinstance(second, SendMail) and first.message_id != second.message_id


def test_reentry_never() -> None:
    journey = steps_only(ONE_SEND, reentry="never", entry=[{"history": "signup"}, {"api": True}])
    state = finished(journey)
    assert run(journey, state, SIGNUP, NOW + timedelta(days=300)).actions == ()
    assert kinds(run(journey, state, ApiEntry(), NOW + timedelta(days=300))) == ["refused"]


def test_reentry_cooldown_counts_from_the_previous_entry() -> None:
    journey = steps_only(ONE_SEND, reentry={"cooldown": "P30D"}, entry={"api": True})
    state = run(journey, None, ApiEntry(), NOW).state
    refused = run(journey, state, ApiEntry(), NOW + timedelta(days=29))
    assert isinstance(refused.actions[0], Refused) and "2026-12-27T12:00:00+00:00" in refused.actions[0].reason
    assert kinds(run(journey, state, ApiEntry(), NOW + timedelta(days=30)))[0] == "entered"


def test_one_instance_at_a_time() -> None:
    journey = steps_only([{"id": "w", "wait": "P1D"}], entry=[{"history": "signup"}, {"api": True}])
    waiting = run(journey, None, SIGNUP, NOW).state
    assert run(journey, waiting, SIGNUP, NOW + timedelta(hours=1)).actions == ()
    refused = run(journey, waiting, ApiEntry(), NOW + timedelta(hours=1))
    assert [type(a) for a in refused.actions] == [Refused] and "already" in refused.actions[0].reason  # type: ignore[union-attr]


def test_an_api_entry_needs_an_api_entry_and_carries_properties_to_the_sends() -> None:
    assert kinds(run(SPEC, None, ApiEntry({"code": "X"}), NOW)) == ["refused"]
    journey = steps_only(ONE_SEND, entry={"api": True}, properties={"code": "string"})
    mail = run(journey, None, ApiEntry({"code": "X1"}), NOW).actions[1]
    assert isinstance(mail, SendMail) and mail.properties == {"code": "X1"}


def test_an_entry_where_filters_the_event() -> None:
    journey = steps_only(
        ONE_SEND, entry={"history": "purchase", "where": [{"field": "sku", "op": "starts_with", "value": "SHOE-"}]}
    )
    assert run(journey, None, HistoryEvent("purchase", Record(sku="HAT-1")), NOW).state is None
    assert kinds(run(journey, None, PURCHASE, NOW))[0] == "entered"
    assert run(journey, None, SIGNUP, NOW).state is None


def test_segment_entry_and_exit_only_when_configured() -> None:
    journey = steps_only([{"id": "w", "wait": "P1D"}, *ONE_SEND], entry={"segment": "vip", "on": "enter"})
    waiting = run(journey, None, SegmentEvent("vip", True), NOW).state
    assert waiting is not None and waiting.active
    assert run(journey, waiting, SegmentEvent("vip", False), NOW + timedelta(hours=1)).actions == ()
    leaving = steps_only(
        [{"id": "w", "wait": "P1D"}], entry={"segment": "vip", "on": "enter"}, exit={"segment": "vip", "on": "exit"}
    )
    waiting = run(leaving, None, SegmentEvent("vip", True), NOW).state
    assert kinds(run(leaving, waiting, SegmentEvent("vip", False), NOW + timedelta(hours=1))) == ["ended:exited"]
    assert run(leaving, None, SegmentEvent("churned", True), NOW).state is None


def test_an_event_that_ends_an_instance_does_not_start_the_next() -> None:
    journey = steps_only([{"id": "w", "wait": "P1D"}], exit={"history": "signup"})
    waiting = run(journey, None, SIGNUP, NOW).state
    assert kinds(run(journey, waiting, SIGNUP, NOW + timedelta(hours=1))) == ["ended:exited"]


# -- replays, versions ----------------------------------------------------------------------------------


def test_a_replayed_input_is_a_no_op() -> None:
    first = run(SPEC, None, HistoryEvent("signup", Record(), position=7), NOW)
    assert first.state is not None and first.state.position == 7
    replay = run(SPEC, first.state, HistoryEvent("signup", Record(), position=7), NOW + timedelta(seconds=5))
    assert replay.actions == () and replay.state == first.state
    ask = run(SPEC, first.state, Timer(), NOW + timedelta(days=2)).state
    event = run(SPEC, ask, HistoryEvent("purchase", Record(), position=9), NOW + timedelta(days=3))
    assert "done:ask:event" in kinds(event)
    assert run(SPEC, event.state, HistoryEvent("purchase", Record(), position=9), NOW + timedelta(days=3)).actions == ()
    older = run(SPEC, event.state, HistoryEvent("purchase", Record(), position=8), NOW + timedelta(days=3))
    assert older.actions == ()


def test_the_same_input_on_the_same_state_gives_the_same_ids() -> None:
    state = at_ask()
    one = run(SPEC, state, Timer(), NOW + timedelta(days=5))
    two = run(SPEC, state, Timer(), NOW + timedelta(days=5, hours=3))  # fired again later, after a crash
    assert [a for a in one.actions if isinstance(a, SendMail)] == [a for a in two.actions if isinstance(a, SendMail)]


def test_running_instances_finish_on_their_version() -> None:
    old = compiled(example(), version=1)
    state = run(Versions("j", old), None, SIGNUP, NOW).state
    shorter = compiled(example(steps=ONE_SEND), version=2)
    both = Versions("j", shorter, {1: old})
    result = run(both, state, Timer(), NOW + timedelta(days=2))
    assert kinds(result)[0] == "done:pause:waited" and result.state is not None and result.state.version == 1
    fresh = run(both, None, SIGNUP, NOW)
    assert fresh.state is not None and fresh.state.version == 2 and kinds(fresh)[1] == "send:s"


def test_an_instance_whose_version_is_gone_ends() -> None:
    state = run(SPEC, None, SIGNUP, NOW).state
    result = run(Versions("j", compiled(example(), version=2)), state, Timer(), NOW + timedelta(days=2))
    assert kinds(result) == ["ended:version"]
    assert result.state is not None and result.state.end_reason == "version"
    beyond = InstanceState(1, 1, 99, 3, state.entered, state.due)  # a step this version does not have
    assert kinds(run(SPEC, beyond, Timer(), NOW + timedelta(days=2))) == ["ended:version"]


# -- quiet hours --------------------------------------------------------------------------------------


def local(text: str, zone: Any = TZ) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone).astimezone(UTC)


@pytest.mark.parametrize(
    ("window", "at", "until"),
    [
        ({"from": "21:00", "to": "08:00"}, "2026-11-27T22:30", "2026-11-28T08:00"),  # wraps midnight, evening
        ({"from": "21:00", "to": "08:00"}, "2026-11-28T03:00", "2026-11-28T08:00"),  # wraps midnight, night
        ({"from": "12:00", "to": "14:00"}, "2026-11-27T13:00", "2026-11-27T14:00"),  # inside one day
        ({"from": "21:00", "to": "08:00"}, "2026-11-27T20:59", None),
        ({"from": "21:00", "to": "08:00"}, "2026-11-28T08:00", None),  # the end is outside
        ({"from": "00:30", "to": "03:30"}, "2026-03-29T01:00", "2026-03-29T03:30"),  # DST spring-forward night
    ],
)
def test_a_send_inside_quiet_hours_waits_for_the_window_end(window: dict[str, str], at: str, until: str | None) -> None:
    journey = steps_only(ONE_SEND, quiet_hours=window)
    result = run(journey, None, SIGNUP, local(at))
    if until is None:
        assert kinds(result) == ["entered", "send:s", "done:s:sent", "ended:completed"]
        return
    assert kinds(result) == ["entered"] and result.due == local(until)
    assert run(journey, result.state, Timer(), local(until) - timedelta(seconds=1)).actions == ()
    sent = run(journey, result.state, Timer(), local(until))
    assert kinds(sent) == ["send:s", "done:s:sent", "ended:completed"]
    mail = sent.actions[0]
    assert isinstance(mail, SendMail) and mail.seq == 1  # the deferred send keeps its place in the sequence


def test_quiet_hours_follow_the_recipients_time_zone() -> None:
    raw = example(database="abroad", steps=ONE_SEND, exit=None, goal=None, reentry=None)
    journey = versions(raw, zone_attribute="timezone")
    tokyo = View(attributes={"timezone": "Asia/Tokyo"})
    at = local("2026-11-27T23:00", TZ)  # 07:00 next morning in Tokyo: quiet there
    result = run(journey, None, SIGNUP, at, tokyo)
    assert result.due == datetime(2026, 11, 27, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo
    assert kinds(run(journey, None, SIGNUP, at, View(attributes={"timezone": "Not/AZone"}))) == ["entered"]
    assert run(journey, None, SIGNUP, at, View(attributes={"timezone": "Not/AZone"})).due == local("2026-11-28T08:00")


# -- waits --------------------------------------------------------------------------------------------


def test_wait_until_a_local_time() -> None:
    journey = steps_only([{"id": "w", "wait": {"until": "09:00"}}, *ONE_SEND])
    assert run(journey, None, SIGNUP, local("2026-11-27T08:00")).due == local("2026-11-27T09:00")
    assert run(journey, None, SIGNUP, local("2026-11-27T09:00")).due == local("2026-11-28T09:00")
    assert run(journey, None, SIGNUP, local("2026-03-28T12:00")).due == local("2026-03-29T09:00")  # across DST


def test_wait_for_a_birthday_minus_a_day() -> None:
    journey = steps_only([{"id": "w", "wait": {"attribute": "birthday", "offset": "-P1D"}}, *ONE_SEND])
    view = View(attributes={"birthday": "1990-12-24"})
    assert run(journey, None, SIGNUP, NOW, view).due == local("2026-12-23T00:00")
    late = View(attributes={"birthday": "1990-11-27"})  # today: tomorrow's eve is past, so next year
    assert run(journey, None, SIGNUP, NOW, late).due == local("2027-11-26T00:00")
    future = View(attributes={"birthday": "2027-06-01"})  # a date still ahead is that date
    assert run(journey, None, SIGNUP, NOW, future).due == local("2027-05-31T00:00")


def test_wait_for_a_datetime_attribute() -> None:
    journey = steps_only([{"id": "w", "wait": {"attribute": "renewal", "offset": "PT1H"}}, *ONE_SEND])
    ahead = View(attributes={"renewal": "2026-12-01T10:00:00+00:00"})
    assert run(journey, None, SIGNUP, NOW, ahead).due == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    past = View(attributes={"renewal": "2026-01-01T10:00:00+00:00"})
    assert kinds(run(journey, None, SIGNUP, NOW, past)) == [
        "entered",
        "done:w:waited",
        "send:s",
        "done:s:sent",
        "ended:completed",
    ]


def test_a_date_wait_without_the_date_ends_the_instance() -> None:
    journey = steps_only([{"id": "w", "wait": {"attribute": "birthday"}}, *ONE_SEND])
    for view in (View(), View(attributes={"birthday": "not a date"})):
        result = run(journey, None, SIGNUP, NOW, view)
        assert kinds(result) == ["entered", "done:w:no-date", "ended:no-date"]


# -- if, split, update ----------------------------------------------------------------------------------


def test_an_if_after_an_update_sees_the_updated_attribute() -> None:
    journey = steps_only([
        {"id": "u", "update": {"attributes": {"coupon_sent": True, "score": 5}}},
        {"id": "i", "if": {"attribute": "coupon_sent", "op": "eq", "value": True}, "then": "yes", "else": "no"},
        {"id": "yes", "send": {"template": "coupon"}, "next": "end"},
        {"id": "no", "send": {"template": "nudge"}},
        {"id": "end", "exit": True},
    ])  # fmt: skip
    result = run(journey, None, SIGNUP, NOW)
    assert kinds(result)[1:5] == ["update:u", "done:u:updated", "done:i:then", "send:yes"]
    update = result.actions[1]
    assert isinstance(update, UpdateAttributes) and update.attributes == {"coupon_sent": True, "score": 5}


def test_if_reads_segment_membership_and_history() -> None:
    journey = steps_only([
        {"id": "i", "if": {"any": [{"segment": "vip"}, {"history": "purchase", "within": "P1D"}]}, "then": "a", "else": "b"},
        {"id": "a", "send": {"template": "tips"}, "next": "end"},
        {"id": "b", "send": {"template": "nudge"}},
        {"id": "end", "exit": True},
    ])  # fmt: skip
    assert "done:i:then" in kinds(run(journey, None, SIGNUP, NOW, View(segments={"vip"})))
    recent = View(records={"purchase": [Record(time="2026-11-27T06:00:00+00:00")]})
    assert "done:i:then" in kinds(run(journey, None, SIGNUP, NOW, recent))
    assert "done:i:else" in kinds(run(journey, None, SIGNUP, NOW, View()))


def test_split_is_deterministic_per_recipient_and_follows_the_weights() -> None:
    journey = steps_only([
        {"id": "p", "split": [{"weight": 70, "next": "a"}, {"weight": 30, "next": "b"}]},
        {"id": "a", "exit": True},
        {"id": "b", "exit": True},
    ])  # fmt: skip
    counts = {"a": 0, "b": 0}
    for n in range(4000):
        who = Recipient(f"members/{n}".encode(), 0)
        first = kinds(advance(journey, None, who, View(), SIGNUP, NOW))
        assert first == kinds(advance(journey, None, who, View(), SIGNUP, NOW + timedelta(days=9)))
        counts["a" if "done:a:exit" in first else "b"] += 1
    assert 0.67 < counts["a"] / 4000 < 0.73


# -- state ---------------------------------------------------------------------------------------------


def test_a_waiting_instance_is_a_few_dozen_bytes() -> None:
    state = at_ask()
    data = encode_state(state)
    assert decode_state(data) == state
    assert len(data) <= 40, len(data)
    assert from_micros(state.due) == NOW + timedelta(days=5)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        run(SPEC, None, SIGNUP, datetime(2026, 1, 1))
