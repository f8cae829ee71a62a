"""Parsing journey definitions (SPEC §10): every form accepted, every error named by its JSON path."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import pytest

from streamapp.journeys.definition import MAX_STEPS, JourneyError, parse_journey
from streamapp.journeys.nodes import (
    END,
    ApiTrigger,
    Exit,
    HistoryTrigger,
    If,
    QuietHours,
    Reentry,
    SegmentTrigger,
    Send,
    Split,
    Update,
    WaitAttribute,
    WaitDuration,
    WaitForEvent,
    WaitUntil,
)
from streamapp.segments.nodes import AttributeLeaf, HistoryLeaf, SegmentLeaf
from tests.journeys.common import CATALOG, SPEC_EXAMPLE, example, journey


def errors(raw: object) -> list[tuple[str, str]]:
    with pytest.raises(JourneyError) as caught:
        parse_journey("j", raw, CATALOG)
    return caught.value.errors


def error_at(raw: object, path: str) -> str:
    """The message at `path`; fails listing every error when there is none there."""
    found = errors(raw)
    messages = [message for where, message in found if where == path]
    assert messages, f"no error at {path}: {found}"
    return messages[0]


def steps(*items: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return example(steps=list(items), **changes)


SEND = {"id": "s", "send": {"template": "welcome"}}


# -- what is accepted -----------------------------------------------------------------------------


def test_the_spec_example_validates_into_typed_steps() -> None:
    parsed = journey(SPEC_EXAMPLE, "welcome")
    assert parsed.name == "welcome" and parsed.database == "members"
    assert parsed.entries == (HistoryTrigger("signup", HistoryLeaf("signup")),)
    assert parsed.reentry == Reentry("cooldown", timedelta(days=30))
    assert parsed.exit == HistoryTrigger("return", HistoryLeaf("return"))
    assert parsed.goal is not None and parsed.goal.within == timedelta(days=14) and not parsed.goal.exit
    assert parsed.quiet_hours == QuietHours(time(21), time(8))
    by_id = {step.id: step.action for step in parsed.steps}
    assert by_id["hello"] == Send("welcome", "batch", True, 1)  # next defaults to the following step
    assert by_id["pause"] == WaitDuration(timedelta(days=2), 2)
    engaged = by_id["engaged"]
    assert isinstance(engaged, If) and (engaged.then, engaged.otherwise) == (4, 3)
    assert isinstance(by_id["ask"], WaitForEvent) and by_id["ask"].timeout == timedelta(days=3)
    assert (by_id["ask"].on_event, by_id["ask"].on_timeout) == (9, 6)
    assert by_id["offer"] == Split(by_id["offer"].branches) and [b.next for b in by_id["offer"].branches] == [7, 10]
    assert by_id["coupon"] == Update((("coupon_sent", True),), 8)
    assert by_id["thanks"] == Send("thanks", "campaign", True, 10)
    assert by_id["end"] == Exit()


def test_the_last_step_leads_to_the_end_and_defaults_apply() -> None:
    parsed = journey(steps(SEND, reentry=None, goal=None, exit=None, quiet_hours=None))
    assert parsed.steps[0].action == Send("welcome", "campaign", True, END)
    assert parsed.reentry == Reentry("after_exit")
    assert parsed.goal is None and parsed.exit is None and parsed.quiet_hours is None


def test_every_entry_form_and_wait_form() -> None:
    raw = steps(
        {"id": "a", "wait": {"until": "09:30"}},
        {"id": "b", "wait": {"attribute": "birthday", "offset": "-P1D"}},
        {"id": "c", "wait": {"attribute": "renewal"}},
        {"id": "d", "wait_for": {"segment": "vip", "on": "enter"}, "timeout": "PT1H"},
        {"id": "e", "if": {"segment": "churned"}, "then": "f"},
        {"id": "f", "send": {"template": "tips", "priority": "transactional", "track": False}},
        entry=[
            {"history": "purchase", "where": [{"field": "sku", "op": "starts_with", "value": "SHOE-"}]},
            {"segment": "vip", "on": "exit"},
            {"api": True},
        ],
        properties={"code": "string", "amount": "float?"},
        reentry="never",
        exit={"segment": "churned", "on": "enter"},
        goal={"segment": "vip", "on": "enter", "within": "P7D", "exit": True},
    )
    parsed = journey(raw)
    purchase, vip_exit, api = parsed.entries
    assert isinstance(purchase, HistoryTrigger) and purchase.leaf.where[0].field == "sku"
    assert vip_exit == SegmentTrigger("vip", False) and api == ApiTrigger() and parsed.api_entry
    assert parsed.properties is not None and parsed.properties["amount"].required is False
    assert parsed.exit == SegmentTrigger("churned", True)
    assert parsed.goal is not None and parsed.goal.exit and parsed.goal.trigger == SegmentTrigger("vip", True)
    actions = [step.action for step in parsed.steps]
    assert actions[0] == WaitUntil(time(9, 30), 1)
    assert actions[1] == WaitAttribute("birthday", "date", timedelta(days=-1), 2)
    assert actions[2] == WaitAttribute("renewal", "datetime", timedelta(0), 3)
    assert isinstance(actions[3], WaitForEvent) and actions[3].trigger == SegmentTrigger("vip", True)
    assert actions[4] == If(SegmentLeaf("churned"), 5, 5)
    assert actions[5] == Send("tips", "transactional", False, END)


def test_update_values_are_stored_as_an_upsert_stores_them() -> None:
    raw = steps({"id": "u", "update": {"attributes": {"birthday": "2000-02-29", "renewal": "2027-01-01T10:00"}}})
    update = journey(raw).steps[0].action
    assert isinstance(update, Update)
    assert dict(update.attributes) == {"birthday": "2000-02-29", "renewal": "2027-01-01T10:00:00+01:00"}


def test_if_takes_any_segment_condition() -> None:
    condition = {"all": [{"attribute": "score", "op": "gte", "value": 10}, {"not": {"segment": "vip"}}]}
    action = journey(steps({"id": "i", "if": condition}, SEND)).steps[0].action
    assert isinstance(action, If) and action.then == action.otherwise == 1
    assert isinstance(action.condition.children[0], AttributeLeaf)  # type: ignore[union-attr]


def test_loops_through_a_wait_are_allowed() -> None:
    raw = steps(
        {"id": "mail", "send": {"template": "tips"}},
        {"id": "later", "wait": "P7D"},
        {"id": "again", "if": {"attribute": "score", "op": "lt", "value": 3}, "then": "mail", "else": "stop"},
        {"id": "stop", "exit": True},
    )
    assert len(journey(raw).steps) == 4


# -- every error, by path -------------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any] | list[Any], str, str]] = [
    # (name, definition, path, part of the message)
    ("not an object", [], "", "JSON object"),
    ("unknown top key", example(colour="red"), "/colour", "unknown key"),
    ("description type", example(description=3), "/description", "must be a string"),
    ("no database", example(database=None), "/database", "missing"),
    ("unknown database", example(database="nope"), "/database", "unknown database 'nope'"),
    ("no entry", example(entry=None), "/entry", "missing"),
    ("empty entry list", example(entry=[]), "/entry", "must not be an empty list"),
    ("entry not an object", example(entry="signup"), "/entry", "must be an object"),
    ("entry of two kinds", example(entry={"history": "signup", "api": True}), "/entry", "has both"),
    ("entry of no kind", example(entry={"on": "enter"}), "/entry", "has none of the keys"),
    ("unknown history type", example(entry={"history": "nope"}), "/entry/history", "unknown history type"),
    (
        "bad where",
        example(entry={"history": "purchase", "where": [{"field": "colour", "op": "eq", "value": 1}]}),
        "/entry/where/0/field",
        "unknown field",
    ),
    ("entry extra key", example(entry={"history": "signup", "within": "P1D"}), "/entry/within", "unknown key"),
    ("unknown segment", example(entry={"segment": "api-only", "on": "enter"}), "/entry/segment", "configured"),
    ("segment without on", example(entry={"segment": "vip"}), "/entry/on", "missing"),
    ("segment bad on", example(entry={"segment": "vip", "on": "leave"}), "/entry/on", "neither"),
    ("api not true", example(entry={"api": 1}), "/entry/api", "must be true"),
    ("two api entries", example(entry=[{"api": True}, {"api": True}]), "/entry/1", "at most one api"),
    ("list entry path", example(entry=[{"history": "signup"}, {"history": "nope"}]), "/entry/1/history", "unknown"),
    ("reentry word", example(reentry="always"), "/reentry", '"never", "after_exit"'),
    ("reentry cooldown", example(reentry={"cooldown": "P1M"}), "/reentry/cooldown", "months"),
    ("reentry extra", example(reentry={"cooldown": "P1D", "x": 1}), "/reentry/x", "unknown key"),
    ("exit by api", example(exit={"api": True}), "/exit/api", "only an entry"),
    ("exit history", example(exit={"history": "nope"}), "/exit/history", "unknown history type"),
    ("goal not object", example(goal="purchase"), "/goal", "must be an object"),
    ("goal without within", example(goal={"history": "purchase"}), "/goal/within", "missing"),
    ("goal bad within", example(goal={"history": "purchase", "within": "P2W"}), "/goal/within", "weeks"),
    ("goal bad exit", example(goal={"history": "purchase", "within": "P1D", "exit": "yes"}), "/goal/exit", "true or"),
    ("goal segment", example(goal={"segment": "x", "on": "enter", "within": "P1D"}), "/goal/segment", "unknown"),
    ("quiet not object", example(quiet_hours="21-08"), "/quiet_hours", "must be an object"),
    ("quiet bad from", example(quiet_hours={"from": "24:00", "to": "08:00"}), "/quiet_hours/from", "HH:MM"),
    ("quiet no to", example(quiet_hours={"from": "21:00"}), "/quiet_hours/to", "missing"),
    ("quiet empty", example(quiet_hours={"from": "08:00", "to": "08:00"}), "/quiet_hours", "empty"),
    ("quiet extra", example(quiet_hours={"from": "21:00", "to": "08:00", "tz": "UTC"}), "/quiet_hours/tz", "unknown"),
    ("properties without api", example(properties={"code": "string"}), "/properties", "only an"),
    (
        "property type",
        example(entry={"api": True}, properties={"code": "text"}),
        "/properties/code",
        "expected one of",
    ),
    (
        "property name",
        example(entry={"api": True}, properties={"not-a-name": "string"}),
        "/properties/not-a-name",
        "identifier",
    ),
    ("properties not object", example(entry={"api": True}, properties=["code"]), "/properties", "must be an object"),
    ("no steps", example(steps=None), "/steps", "missing"),
    ("empty steps", example(steps=[]), "/steps", "non-empty list"),
    ("step not object", steps("send"), "/steps/0", "must be an object"),
    ("step no id", steps({"send": {"template": "welcome"}}), "/steps/0/id", "missing"),
    ("step bad id", steps({"id": "a b", "send": {"template": "welcome"}}), "/steps/0/id", "must match"),
    ("duplicate id", steps(SEND, SEND), "/steps/1/id", "duplicate id 's' (first at /steps/0)"),
    ("two kinds", steps({"id": "x", "send": {"template": "welcome"}, "wait": "P1D"}), "/steps/0", "has both"),
    ("no kind", steps({"id": "x"}), "/steps/0", "has no step kind"),
    ("unknown step key", steps({**SEND, "then": "s"}), "/steps/0/then", "unknown key"),
    ("next unknown", steps({**SEND, "next": "nowhere"}), "/steps/0/next", "names no step: 'nowhere'"),
    ("send not object", steps({"id": "s", "send": "welcome"}), "/steps/0/send", "must be an object"),
    ("send no template", steps({"id": "s", "send": {}}), "/steps/0/send/template", "missing"),
    ("send unknown template", steps({"id": "s", "send": {"template": "gone"}}), "/steps/0/send/template", "exist"),
    (
        "send priority",
        steps({"id": "s", "send": {"template": "welcome", "priority": "urgent"}}),
        "/steps/0/send/priority",
        "unknown priority",
    ),
    (
        "send track",
        steps({"id": "s", "send": {"template": "welcome", "track": "no"}}),
        "/steps/0/send/track",
        "true or false",
    ),
    ("send extra", steps({"id": "s", "send": {"template": "welcome", "to": "x"}}), "/steps/0/send/to", "unknown"),
    ("wait duration", steps({"id": "w", "wait": "2 days"}), "/steps/0/wait", "ISO 8601"),
    ("wait too long", steps({"id": "w", "wait": "P401D"}), "/steps/0/wait", "out of range"),
    ("wait negative", steps({"id": "w", "wait": "-P1D"}), "/steps/0/wait", "negative"),
    ("wait shape", steps({"id": "w", "wait": 3}), "/steps/0/wait", "must be a duration"),
    ("wait until", steps({"id": "w", "wait": {"until": "9:00"}}), "/steps/0/wait/until", "HH:MM"),
    ("wait until extra", steps({"id": "w", "wait": {"until": "09:00", "x": 1}}), "/steps/0/wait/x", "unknown"),
    (
        "wait attribute type",
        steps({"id": "w", "wait": {"attribute": "score"}}),
        "/steps/0/wait/attribute",
        "attribute 'score' is int; a wait needs a date or datetime attribute (birthday, renewal)",
    ),
    ("wait attribute unknown", steps({"id": "w", "wait": {"attribute": "x"}}), "/steps/0/wait/attribute", "unknown"),
    (
        "wait attribute offset",
        steps({"id": "w", "wait": {"attribute": "birthday", "offset": "P1Y"}}),
        "/steps/0/wait/offset",
        "years",
    ),
    ("wait_for no timeout", steps({"id": "w", "wait_for": {"history": "purchase"}}), "/steps/0/timeout", "missing"),
    (
        "wait_for timeout inside",
        steps({"id": "w", "wait_for": {"history": "purchase", "timeout": "P1D"}, "timeout": "P1D"}),
        "/steps/0/wait_for/timeout",
        "belongs to the step",
    ),
    (
        "wait_for bad timeout",
        steps({"id": "w", "wait_for": {"history": "purchase"}, "timeout": "soon"}),
        "/steps/0/timeout",
        "ISO 8601",
    ),
    (
        "wait_for by api",
        steps({"id": "w", "wait_for": {"api": True}, "timeout": "P1D"}),
        "/steps/0/wait_for/api",
        "only an entry",
    ),
    (
        "wait_for where",
        steps({"id": "w", "wait_for": {"history": "purchase", "where": {}}, "timeout": "P1D"}),
        "/steps/0/wait_for/where",
        "list",
    ),
    (
        "wait_for target",
        steps({"id": "w", "wait_for": {"history": "purchase"}, "timeout": "P1D", "on_event": "x"}),
        "/steps/0/on_event",
        "names no step",
    ),
    (
        "wait_for timeout target",
        steps({"id": "w", "wait_for": {"history": "purchase"}, "timeout": "P1D", "on_timeout": 3}),
        "/steps/0/on_timeout",
        "names no step",
    ),
    (
        "if condition",
        steps({"id": "i", "if": {"attribute": "score", "op": "gte", "value": "x"}}, SEND),
        "/steps/0/if/value",
        "integer",
    ),
    ("if unknown segment", steps({"id": "i", "if": {"segment": "nope"}}, SEND), "/steps/0/if/segment", "unknown"),
    ("if then", steps({"id": "i", "if": {"segment": "vip"}, "then": "x"}, SEND), "/steps/0/then", "names no step"),
    ("if else", steps({"id": "i", "if": {"segment": "vip"}, "else": "x"}, SEND), "/steps/0/else", "names no step"),
    ("split not list", steps({"id": "p", "split": {"weight": 1}}), "/steps/0/split", "non-empty list"),
    ("split empty", steps({"id": "p", "split": []}), "/steps/0/split", "non-empty list"),
    ("split item", steps({"id": "p", "split": [1]}), "/steps/0/split/0", "must be an object"),
    (
        "split weight zero",
        steps({"id": "p", "split": [{"weight": 0, "next": "s"}]}, SEND),
        "/steps/0/split/0/weight",
        "above 0",
    ),
    (
        "split weight missing",
        steps({"id": "p", "split": [{"next": "s"}]}, SEND),
        "/steps/0/split/0/weight",
        "missing",
    ),
    (
        "split weight bool",
        steps({"id": "p", "split": [{"weight": True, "next": "s"}]}, SEND),
        "/steps/0/split/0/weight",
        "above 0",
    ),
    ("split no next", steps({"id": "p", "split": [{"weight": 1}]}), "/steps/0/split/0/next", "missing"),
    (
        "split bad next",
        steps({"id": "p", "split": [{"weight": 1, "next": "x"}]}),
        "/steps/0/split/0/next",
        "names no step",
    ),
    (
        "split extra",
        steps({"id": "p", "split": [{"weight": 1, "next": "s", "p": 1}]}, SEND),
        "/steps/0/split/0/p",
        "unknown",
    ),
    (
        "split with next",
        steps({"id": "p", "split": [{"weight": 1, "next": "s"}], "next": "s"}, SEND),
        "/steps/0/next",
        "unknown key",
    ),
    ("update shape", steps({"id": "u", "update": {"score": 1}}), "/steps/0/update", "attributes"),
    ("update empty", steps({"id": "u", "update": {"attributes": {}}}), "/steps/0/update/attributes", "at least one"),
    (
        "update undeclared",
        steps({"id": "u", "update": {"attributes": {"colour": "red"}}}),
        "/steps/0/update/attributes/colour",
        "unknown attribute",
    ),
    (
        "update type",
        steps({"id": "u", "update": {"attributes": {"score": "high"}}}),
        "/steps/0/update/attributes/score",
        "integer",
    ),
    (
        "update date",
        steps({"id": "u", "update": {"attributes": {"birthday": "29/02/2000"}}}),
        "/steps/0/update/attributes/birthday",
        "date",
    ),
    ("update not object", steps({"id": "u", "update": {"attributes": [1]}}), "/steps/0/update/attributes", "object"),
    (
        "update extra",
        steps({"id": "u", "update": {"attributes": {"score": 1}, "x": 1}}),
        "/steps/0/update/x",
        "unknown",
    ),
    ("exit not true", steps({"id": "e", "exit": "yes"}), "/steps/0/exit", "must be true"),
    ("exit with next", steps({"id": "e", "exit": True, "next": "e"}), "/steps/0/next", "unknown key"),
    (
        "unreachable",
        steps(
            {"id": "a", "send": {"template": "welcome"}, "next": "c"},
            {"id": "b", "wait": "P1D"},
            {"id": "c", "exit": True},
        ),
        "/steps/1",
        "unreachable",
    ),
    (
        "loop without wait",
        steps(
            {"id": "a", "send": {"template": "welcome"}},
            {"id": "b", "if": {"segment": "vip"}, "then": "a", "else": "c"},
            {"id": "c", "exit": True},
        ),
        "/steps/0",
        "the loop a -> b -> a has no wait or wait_for",
    ),
    (
        "loop through a date-time wait",
        steps(
            {"id": "a", "wait": {"attribute": "renewal"}},
            {"id": "b", "update": {"attributes": {"score": 1}}, "next": "a"},
        ),
        "/steps/0",
        "the loop a -> b -> a",
    ),
    ("self loop", steps({"id": "a", "update": {"attributes": {"score": 1}}, "next": "a"}), "/steps/0", "a -> a"),
]


@pytest.mark.parametrize(("raw", "path", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_each_error_names_its_path(raw: Any, path: str, message: str) -> None:
    assert message in error_at(raw, path)


def test_every_problem_is_reported_at_once() -> None:
    raw = example(reentry="sometimes", quiet_hours={"from": "25:00", "to": "08:00"})
    raw["steps"][1]["wait"] = "two days"
    raw["steps"][3]["send"]["template"] = "gone"
    paths = [path for path, _ in errors(raw)]
    assert paths == ["/reentry", "/quiet_hours/from", "/steps/1/wait", "/steps/3/send/template"]


def test_too_many_steps() -> None:
    many = [{"id": f"s{i}", "wait": "P1D"} for i in range(MAX_STEPS + 1)]
    assert "at most" in error_at(steps(*many), "/steps")


def test_an_unknown_database_stops_before_schema_checks() -> None:
    assert errors(example(database="nope")) == [("/database", "unknown database 'nope' (defined: abroad, members)")]


def test_the_error_text_lists_every_path() -> None:
    with pytest.raises(JourneyError, match=r"/steps/0/send/template: template 'gone' does not exist"):
        parse_journey("j", steps({"id": "s", "send": {"template": "gone"}}), CATALOG)
