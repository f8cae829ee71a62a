"""Evaluating one recipient (SPEC §9): every op on every type, missing values, time zones, history, next_flip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streamapp.segments.definition import Catalog, parse_definition
from streamapp.segments.evaluate import compile_definition, evaluate, evaluate_with_flip, next_flip
from streamapp.segments.nodes import Node

TZ = ZoneInfo("Europe/Stockholm")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # 13:00 in Stockholm
SCHEMA = {"name": "string", "score": "int", "ratio": "float", "optin": "bool", "birthday": "date", "seen": "datetime"}
CATALOG = Catalog(SCHEMA, {"purchase", "visit"}, {"vip"})


@dataclass
class Record:
    time: str
    sku: str | None = None
    price: float | None = None
    quantity: float | None = None
    total: float | None = None
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass
class View:
    attributes: dict[str, Any] = field(default_factory=dict)
    email: str | None = "ann@example.com"
    status: str = "active"
    createdAt: str = "2026-01-01T00:00:00+00:00"
    updatedAt: str = "2026-11-01T00:00:00+00:00"
    records: dict[str, list[Record]] = field(default_factory=dict)
    segments: set[str] = field(default_factory=set)

    def history(self, type: str) -> Sequence[Record]:
        return sorted(self.records.get(type, []), key=lambda r: r.time, reverse=True)  # as the store: UTC text

    def member_of(self, segment: str) -> bool:
        return segment in self.segments


def node_of(raw: object) -> Node:
    return parse_definition(raw, CATALOG)


def check(raw: object, view: View, now: datetime = NOW) -> bool:
    """evaluate(), cross-checked with the compiled closures and the flip path."""
    node = node_of(raw)
    value = evaluate(node, view, now, TZ)
    compiled = compile_definition(node, TZ)
    assert compiled.matches(view, now) is value
    assert evaluate_with_flip(node, view, now, TZ)[0] is value
    return value


def attr(name: str, op: str, value: Any = ...) -> dict[str, Any]:
    raw: dict[str, Any] = {"attribute": name, "op": op}
    if value is not ...:
        raw["value"] = value
    return raw


# -- every op on every type -------------------------------------------------------------------------

CASES: list[tuple[str, str, Any, Any, bool]] = [
    # (attribute, op, definition value, stored value, expected)
    ("name", "eq", "Ann", "Ann", True),
    ("name", "eq", "Ann", "ann", False),
    ("name", "ne", "Ann", "Bob", True),
    ("name", "ne", "Ann", "Ann", False),
    ("name", "lt", "b", "a", True),
    ("name", "lt", "b", "b", False),
    ("name", "lte", "b", "b", True),
    ("name", "gt", "b", "c", True),
    ("name", "gte", "b", "a", False),
    ("name", "between", ["b", "d"], "c", True),
    ("name", "between", ["b", "d"], "d", True),
    ("name", "between", ["b", "d"], "da", False),
    ("name", "in", ["a", "b"], "b", True),
    ("name", "in", ["a", "b"], "c", False),
    ("name", "not_in", ["a", "b"], "c", True),
    ("name", "not_in", ["a", "b"], "a", False),
    ("name", "contains", "nn", "Ann", True),
    ("name", "contains", "NN", "Ann", False),
    ("name", "starts_with", "SHOE-", "SHOE-42", True),
    ("name", "starts_with", "SHOE-", "shoe-42", False),
    ("name", "ends_with", "-42", "SHOE-42", True),
    ("name", "ends_with", "-42", "SHOE-43", False),
    ("name", "exists", ..., "", True),
    ("name", "not_exists", ..., "", False),
    ("score", "eq", 10, 10, True),
    ("score", "eq", 10, 10.0, True),
    ("score", "ne", 10, 11, True),
    ("score", "lt", 10, 9, True),
    ("score", "lte", 10, 10, True),
    ("score", "gt", 10, 10, False),
    ("score", "gte", 10, 10, True),
    ("score", "between", [1, 5], 5, True),
    ("score", "between", [1, 5], 6, False),
    ("score", "in", [1, 5], 5, True),
    ("score", "not_in", [1, 5], 2, True),
    ("score", "exists", ..., 0, True),
    ("ratio", "eq", 2.5, 2.5, True),
    ("ratio", "gt", 2, 2.25, True),
    ("ratio", "lt", 2.5, 2, True),
    ("ratio", "between", [0, 1], 1.0, True),
    ("ratio", "in", [1, 2.5], 1, True),
    ("optin", "eq", True, True, True),
    ("optin", "eq", True, False, False),
    ("optin", "ne", True, False, True),
    ("optin", "in", [False], False, True),
    ("optin", "not_in", [False], True, True),
    ("optin", "exists", ..., False, True),
    ("birthday", "eq", "1990-05-17", "1990-05-17", True),
    ("birthday", "ne", "1990-05-17", "1990-05-18", True),
    ("birthday", "lt", "1990-05-17", "1990-05-16", True),
    ("birthday", "lte", "1990-05-17", "1990-05-17", True),
    ("birthday", "gt", "1990-05-17", "1990-05-17", False),
    ("birthday", "gte", "1990-05-17", "1990-05-17", True),
    ("birthday", "before", "2000-01-01", "1999-12-31", True),
    ("birthday", "before", "2000-01-01", "2000-01-01", False),
    ("birthday", "after", "2000-01-01", "2000-01-02", True),
    ("birthday", "between", ["2000-01-01", "2000-12-31"], "2000-12-31", True),
    ("birthday", "in", ["2000-01-01", "2000-01-03"], "2000-01-03", True),
    ("birthday", "not_in", ["2000-01-01"], "2000-01-03", True),
    ("seen", "eq", "2026-11-27T10:00:00+00:00", "2026-11-27T11:00:00+01:00", True),
    ("seen", "ne", "2026-11-27T10:00:00+00:00", "2026-11-27T10:00:01+00:00", True),
    ("seen", "lt", "2026-11-27T10:00:00Z", "2026-11-27T09:59:59.999999Z", True),
    ("seen", "lte", "2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z", True),
    ("seen", "gt", "2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z", False),
    ("seen", "gte", "2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z", True),
    ("seen", "before", "2026-11-27T10:00:00Z", "2026-11-27T09:00:00Z", True),
    ("seen", "after", "2026-11-27T10:00:00Z", "2026-11-27T09:00:00Z", False),
    ("seen", "between", ["2026-11-01T00:00Z", "2026-11-30T00:00Z"], "2026-11-30T00:00:00+00:00", True),
    ("seen", "in", ["2026-11-27T10:00:00Z"], "2026-11-27T11:00:00+01:00", True),
    ("seen", "not_in", ["2026-11-27T10:00:00Z"], "2026-11-27T11:00:00+01:00", False),
    ("seen", "exists", ..., "2026-11-27T10:00:00Z", True),
]


@pytest.mark.parametrize(("name", "op", "value", "stored", "expected"), CASES)
def test_every_op_on_every_type(name: str, op: str, value: Any, stored: Any, expected: bool) -> None:
    assert check(attr(name, op, value), View({name: stored})) is expected


@pytest.mark.parametrize(("name", "op", "value", "stored", "expected"), CASES)
def test_missing_values_match_only_not_exists(name: str, op: str, value: Any, stored: Any, expected: bool) -> None:
    """Absent, null or of the wrong type: only not_exists holds (ne and not_in are false too)."""
    wrong = {"name": 5, "score": "10", "ratio": True, "optin": 1, "birthday": "17/05/1990", "seen": "noon"}[name]
    for view in (View({}), View({name: None}), View({name: wrong})):
        assert check(attr(name, op, value), view) is (op == "not_exists")
        assert check(attr(name, "not_exists"), view) is True
        assert check({"not": attr(name, op, value)}, view) is (op != "not_exists")  # plain logic above the leaf


def test_relative_ops_on_missing_values() -> None:
    for op in ("within_last", "more_than_ago", "anniversary_within"):
        assert check(attr("birthday", op, "P7D"), View({})) is False
        assert next_flip(node_of(attr("birthday", op, "P7D")), View({}), NOW, TZ) is None


def test_bool_is_not_a_number_and_numbers_are_not_bools() -> None:
    assert check(attr("score", "eq", 1), View({"score": True})) is False
    assert check(attr("optin", "eq", True), View({"optin": 1})) is False


def test_builtin_fields() -> None:
    view = View(email="ann@example.com", status="unsubscribed")
    assert check(attr("email", "ends_with", "@example.com"), view)
    assert check(attr("status", "in", ["unsubscribed", "bounced"]), view)
    assert check(attr("status", "ne", "active"), view)
    assert check(attr("email", "not_exists"), View(email=None))
    assert check(attr("email", "ne", "x"), View(email=None)) is False
    assert check(attr("createdAt", "before", "2026-01-02"), view)
    assert check(attr("updatedAt", "within_last", "P30D"), view)
    assert check(attr("updatedAt", "within_last", "P26D"), view) is False


# -- time zones ---------------------------------------------------------------------------------------


def test_offset_less_stored_datetimes_are_in_the_service_zone() -> None:
    view = View({"seen": "2026-11-27T11:00:00"})  # 10:00 UTC in Stockholm (UTC+1 in November)
    assert check(attr("seen", "eq", "2026-11-27T10:00:00Z"), view)
    summer = View({"seen": "2026-07-01T12:00:00"})  # UTC+2
    assert check(attr("seen", "eq", "2026-07-01T10:00:00+00:00"), summer)


def test_offset_less_definition_values_are_in_the_service_zone() -> None:
    view = View({"seen": "2026-11-27T10:30:00+00:00"})  # 11:30 local
    assert check(attr("seen", "after", "2026-11-27T11:00"), view)
    assert check(attr("seen", "before", "2026-11-27T11:00"), View({"seen": "2026-11-27T09:59:00+00:00"}))


def test_a_date_compared_with_datetimes_is_its_whole_local_day() -> None:
    late = View({"seen": "2026-11-27T22:30:00+00:00"})  # 23:30 on the 27th in Stockholm
    after_midnight = View({"seen": "2026-11-27T23:30:00+00:00"})  # 00:30 on the 28th
    assert check(attr("seen", "eq", "2026-11-27"), late)
    assert check(attr("seen", "eq", "2026-11-27"), after_midnight) is False
    assert check(attr("seen", "in", ["2026-11-28", "2026-12-01"]), after_midnight)
    assert check(attr("seen", "after", "2026-11-27"), after_midnight)
    assert check(attr("seen", "after", "2026-11-27"), late) is False
    assert check(attr("seen", "lte", "2026-11-27"), late)
    assert check(attr("seen", "gte", "2026-11-28"), after_midnight)
    assert check(attr("seen", "lt", "2026-11-28"), late)
    assert check(attr("seen", "before", "2026-11-28"), after_midnight) is False
    assert check(attr("seen", "between", ["2026-11-01", "2026-11-27"]), late)
    assert check(attr("seen", "between", ["2026-11-01", "2026-11-27"]), after_midnight) is False


def test_whole_day_edges_at_local_midnight() -> None:
    midnight = View({"seen": "2026-11-28T00:00:00"})  # the first moment of the 28th, locally
    last = View({"seen": "2026-11-27T23:59:59.999999"})
    for op, before_midnight, at_midnight in [("eq", True, False), ("lte", True, False), ("lt", False, False),
                                              ("gt", False, True), ("after", False, True), ("gte", True, True),
                                              ("before", False, False), ("ne", False, True)]:  # fmt: skip
        assert check(attr("seen", op, "2026-11-27"), last) is before_midnight, op
        assert check(attr("seen", op, "2026-11-27"), midnight) is at_midnight, op
    assert check(attr("seen", "between", ["2026-11-27", "2026-11-27"]), last)
    assert not check(attr("seen", "between", ["2026-11-27", "2026-11-27"]), midnight)
    assert check(attr("seen", "between", ["2026-11-28", "2026-11-29"]), midnight)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        evaluate(node_of(attr("score", "gt", 1)), View({"score": 2}), datetime(2026, 1, 1), TZ)


# -- clock-relative ops --------------------------------------------------------------------------------


def test_within_last_and_more_than_ago_boundaries() -> None:
    node = attr("seen", "within_last", "P1D")
    ago = attr("seen", "more_than_ago", "P1D")
    exactly = View({"seen": "2026-11-26T12:00:00+00:00"})
    inside = View({"seen": "2026-11-26T12:00:00.000001+00:00"})
    future = View({"seen": "2026-11-27T12:00:00.000001+00:00"})
    at_now = View({"seen": "2026-11-27T12:00:00+00:00"})
    assert check(node, exactly) is False and check(ago, exactly) is True
    assert check(node, inside) is True and check(ago, inside) is False
    assert check(node, at_now) is True
    assert check(node, future) is False and check(ago, future) is False


def test_durations_are_exact_across_daylight_saving() -> None:
    """P1D is 24 h even over the night clocks go back (2026-10-25 in Stockholm)."""
    view = View({"seen": "2026-10-24T12:00:00"})  # local, UTC+2: 10:00 UTC
    node = node_of(attr("seen", "within_last", "P1D"))
    assert evaluate(node, view, datetime(2026, 10, 25, 9, 59, 59, tzinfo=UTC), TZ)
    assert not evaluate(node, view, datetime(2026, 10, 25, 10, 0, tzinfo=UTC), TZ)
    assert next_flip(node, view, datetime(2026, 10, 25, 0, 0, tzinfo=TZ), TZ) == datetime(2026, 10, 25, 10, tzinfo=UTC)


def test_a_date_value_starts_at_local_midnight() -> None:
    node = attr("birthday", "within_last", "P1D")
    view = View({"birthday": "2026-11-27"})  # starts 2026-11-26T23:00Z
    assert check(node, view, datetime(2026, 11, 26, 22, 59, tzinfo=UTC)) is False
    assert check(node, view, datetime(2026, 11, 26, 23, 0, tzinfo=UTC)) is True
    assert check(node, view, datetime(2026, 11, 27, 22, 59, tzinfo=UTC)) is True
    assert check(node, view, datetime(2026, 11, 27, 23, 0, tzinfo=UTC)) is False


@pytest.mark.parametrize(
    ("today", "birthday", "duration", "expected"),
    [
        ("2026-11-27", "1990-11-27", "P1D", True),  # today
        ("2026-11-27", "1990-11-28", "P1D", False),
        ("2026-11-27", "1990-11-28", "P2D", True),
        ("2026-11-27", "1990-11-26", "P7D", False),  # yesterday: next one is a year away
        ("2026-11-27", "1990-12-03", "P7D", True),  # six days ahead
        ("2026-11-27", "1990-12-04", "P7D", False),  # seven days ahead
        ("2026-11-27", "1990-11-28", "PT1H", False),  # a partial day counts as one: only today
        ("2026-11-27", "1990-11-28", "P1DT1H", True),
        ("2026-12-30", "1990-01-02", "P4D", True),  # across the year end
        ("2026-12-30", "1990-01-02", "P3D", False),
        ("2026-12-31", "1990-12-31", "P1D", True),
        ("2027-01-01", "1990-12-31", "P365D", True),  # 364 days ahead
        ("2027-01-01", "1990-12-31", "P364D", False),
        ("2027-02-28", "2000-02-29", "P1D", True),  # Feb 29 falls on Feb 28 in other years
        ("2027-02-27", "2000-02-29", "P2D", True),
        ("2027-03-01", "2000-02-29", "P7D", False),
        ("2028-02-28", "2000-02-29", "P1D", False),  # ...but not in a leap year
        ("2028-02-29", "2000-02-29", "P1D", True),
        ("2028-02-28", "2000-02-29", "P2D", True),
        ("2028-02-29", "1999-03-01", "P2D", True),
        ("2026-11-27", "2030-11-27", "P1D", True),  # a future date has anniversaries too
    ],
)
def test_anniversary_within(today: str, birthday: str, duration: str, expected: bool) -> None:
    now = datetime.fromisoformat(today).replace(hour=12, tzinfo=TZ)
    assert check(attr("birthday", "anniversary_within", duration), View({"birthday": birthday}), now) is expected


def test_anniversary_uses_the_local_day() -> None:
    node = attr("birthday", "anniversary_within", "P1D")
    view = View({"birthday": "1990-01-01"})
    assert check(node, view, datetime(2026, 12, 31, 22, 59, tzinfo=UTC)) is False  # 23:59 on Dec 31 locally
    assert check(node, view, datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) is True  # 00:00 on Jan 1 locally
    signup = View(createdAt="2020-01-01T23:30:00+00:00")  # Jan 2 in Stockholm
    assert check(attr("createdAt", "anniversary_within", "P1D"), signup, datetime(2027, 1, 2, 12, tzinfo=TZ))


# -- history ------------------------------------------------------------------------------------------

PURCHASES = [
    Record("2026-11-26T10:00:00+00:00", "SHOE-1", price=50.0, quantity=1, total=50.0, fields={"custom1": "web"}),
    Record("2026-11-20T10:00:00+00:00", "SHOE-2", price=30.0, quantity=2, total=60.0, fields={"custom1": "shop"}),
    Record("2026-10-01T10:00:00+00:00", "HAT-1", price=10.0, quantity=-1, total=-10.0),
    Record("2025-12-01T10:00:00+00:00", "SHOE-3", price=None, quantity=None, total=None),
]


def shopper() -> View:
    return View(records={"purchase": list(PURCHASES)})


def hist(**raw: Any) -> dict[str, Any]:
    return {"history": "purchase", **raw}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (hist(), True),
        ({"history": "visit"}, False),
        (hist(within="P1D"), False),
        (hist(within="PT26H"), False),  # exactly 26 h ago has just left
        (hist(within="PT26H1S"), True),
        (hist(agg="count", op="eq", value=4), True),
        (hist(within="P30D", agg="count", op="eq", value=2), True),
        (hist(within="P60D", agg="count", op="eq", value=3), True),
        (hist(where=[{"field": "sku", "op": "starts_with", "value": "SHOE-"}], agg="count", op="eq", value=3), True),
        (hist(where=[{"field": "custom1", "op": "eq", "value": "web"}], agg="count", op="eq", value=1), True),
        (
            hist(where=[{"field": "custom1", "op": "ne", "value": "web"}], agg="count", op="eq", value=1),
            True,
        ),  # missing custom1 is not "ne"
        (hist(where=[{"field": "custom1", "op": "not_exists"}], agg="count", op="eq", value=2), True),
        (hist(where=[{"field": "price", "op": "gte", "value": 30}], agg="count", op="eq", value=2), True),
        (hist(where=[{"field": "quantity", "op": "lt", "value": 0}]), True),  # a credit
        (hist(agg="sum", field="total", op="eq", value=100), True),  # None skipped
        (hist(within="P30D", agg="sum", field="total", op="eq", value=110), True),
        (hist(within="P1D", agg="sum", field="total", op="eq", value=0), True),  # sum of nothing is 0
        (hist(agg="min", field="total", op="eq", value=-10), True),
        (hist(agg="max", field="price", op="eq", value=50), True),
        (hist(agg="avg", field="quantity", op="between", value=[0.6, 0.7]), True),  # (1+2-1)/3
        (hist(within="P1D", agg="min", field="total", op="lt", value=1e9), False),  # min of nothing is missing
        (hist(within="P1D", agg="avg", field="total", op="ne", value=1), False),
        (hist(agg="last", op="after", value="2026-11-26T09:00:00Z"), True),
        (hist(agg="last", op="within_last", value="P1D"), False),
        (hist(agg="last", op="within_last", value="PT26H1S"), True),
        (hist(agg="last", op="more_than_ago", value="P1D"), True),
        (
            hist(
                where=[{"field": "sku", "op": "eq", "value": "HAT-1"}],
                agg="last",
                op="between",
                value=["2026-10-01", "2026-10-01"],
            ),
            True,
        ),
        ({"history": "visit", "agg": "last", "op": "before", "value": "2030-01-01"}, False),  # no record: missing
        (hist(between=["2026-11-20", "2026-11-26"]), True),
        (hist(between=["2026-11-20", "2026-11-26"], agg="count", op="eq", value=2), True),  # the "to" day is whole
        (hist(between=["2026-11-20T10:00:01Z", "2026-11-26T10:00:00Z"], agg="count", op="eq", value=1), True),
        (hist(between=["2026-11-20T10:00:00Z", "2026-11-26T09:59:59Z"], agg="count", op="eq", value=1), True),
        (hist(between=["2026-01-01", "2026-09-30"]), False),
    ],
)
def test_history(raw: dict[str, Any], expected: bool) -> None:
    assert check(raw, shopper()) is expected


def test_future_records_enter_the_window_when_their_time_comes() -> None:
    view = View(records={"visit": [Record("2026-11-27T13:00:00+00:00")]})
    node = node_of({"history": "visit", "within": "P1D"})
    assert not evaluate(node, view, NOW, TZ)
    assert next_flip(node, view, NOW, TZ) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert evaluate(node, view, datetime(2026, 11, 27, 13, tzinfo=UTC), TZ)
    assert evaluate(node_of({"history": "visit"}), view, NOW, TZ)  # no window: every retained record counts


def test_offset_less_record_times_are_in_the_service_zone() -> None:
    view = View(records={"visit": [Record("2026-11-27T12:30:00")]})  # 11:30 UTC
    assert check({"history": "visit", "within": "PT31M"}, view)
    assert not check({"history": "visit", "within": "PT29M"}, view)


def test_segment_leaves_read_member_of() -> None:
    assert check({"segment": "vip"}, View(segments={"vip"}))
    assert check({"not": {"segment": "vip"}}, View())


def test_combinators() -> None:
    yes, no = attr("score", "gt", 1), attr("score", "lt", 1)
    view = View({"score": 5})
    assert check({"all": [yes, yes]}, view) and not check({"all": [yes, no]}, view)
    assert check({"any": [no, yes]}, view) and not check({"any": [no, no]}, view)
    assert check({"not": no}, view) and not check({"not": {"not": no}}, view)


def test_strange_stored_values_never_raise() -> None:
    view = View(
        {"seen": "9999-12-31T23:59:59+00:00", "birthday": "9999-12-31", "score": float("nan")},
        records={"purchase": [Record("not a time"), Record("9999-12-31T00:00:00+00:00", total=float("inf"))]},
    )
    raws = [
        attr("seen", "within_last", "P400D"),
        attr("seen", "more_than_ago", "P400D"),
        attr("birthday", "anniversary_within", "P400D"),
        attr("score", "gt", 1),
        hist(within="P400D", agg="sum", field="total", op="gt", value=1),
        hist(agg="last", op="within_last", value="P400D"),
    ]
    far = datetime(9999, 12, 30, tzinfo=UTC)
    for raw in raws:
        for now in (NOW, far):
            check(raw, view, now)
            next_flip(node_of(raw), view, now, TZ)


# -- next_flip ------------------------------------------------------------------------------------------


def flip(raw: object, view: View, now: datetime = NOW) -> datetime | None:
    node = node_of(raw)
    due = next_flip(node, view, now, TZ)
    assert due is None or due > now
    _assert_constant_until(node, view, now, due)
    return due


def _assert_constant_until(node: Node, view: View, now: datetime, due: datetime | None) -> None:
    """Never later than a real flip: the value holds on [now, due)."""
    value = evaluate(node, view, now, TZ)
    end = due or now + timedelta(days=800)
    span = end - now
    for fraction in (0.001, 0.25, 0.5, 0.75, 0.999):
        assert evaluate(node, view, now + span * fraction, TZ) is value
    assert evaluate(node, view, end - timedelta(microseconds=1), TZ) is value


def test_nothing_relative_never_flips() -> None:
    assert flip(attr("score", "gt", 1), View({"score": 2})) is None
    assert flip(attr("seen", "before", "2030-01-01"), View({"seen": "2026-01-01T00:00Z"})) is None
    assert flip(hist(between=["2026-01-01", "2026-12-31"]), shopper()) is None
    assert flip(hist(agg="last", op="before", value="2027-01-01"), shopper()) is None
    assert flip(hist(agg="count", op="gte", value=2), shopper()) is None


def test_flip_of_relative_attributes() -> None:
    seen = View({"seen": "2026-11-27T10:00:00+00:00"})
    assert flip(attr("seen", "within_last", "PT3H"), seen) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert flip(attr("seen", "more_than_ago", "PT3H"), seen) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert flip(attr("seen", "more_than_ago", "PT1H"), seen) is None  # already true for good
    assert flip(attr("seen", "within_last", "PT1H"), seen) is None  # already false for good
    later = View({"seen": "2026-11-28T10:00:00+00:00"})
    assert flip(attr("seen", "within_last", "PT1H"), later) == datetime(2026, 11, 28, 10, tzinfo=UTC)


def test_flip_of_anniversaries() -> None:
    now = datetime(2026, 12, 30, 12, tzinfo=TZ)
    soon = View({"birthday": "1990-01-02"})
    assert flip(attr("birthday", "anniversary_within", "P4D"), soon, now) == datetime(2027, 1, 3, tzinfo=TZ)
    assert flip(attr("birthday", "anniversary_within", "P2D"), soon, now) == datetime(2027, 1, 1, tzinfo=TZ)
    leap = View({"birthday": "2000-02-29"})
    assert flip(attr("birthday", "anniversary_within", "P1D"), leap, now) == datetime(2027, 2, 28, tzinfo=TZ)


def test_flip_of_history_windows() -> None:
    view = shopper()
    # at least one in P7D: true until the newest (Nov 26 10:00) leaves
    assert flip(hist(within="P7D"), view) == datetime(2026, 12, 3, 10, tzinfo=UTC)
    # a count over P30D changes when the oldest inside (Nov 20 10:00) leaves
    assert flip(hist(within="P30D", agg="count", op="eq", value=2), view) == datetime(2026, 12, 20, 10, tzinfo=UTC)
    # nothing inside and nothing ahead: false for good
    assert flip(hist(where=[{"field": "sku", "op": "eq", "value": "NONE"}], within="P7D"), view) is None
    # last: the newest record's age
    assert flip(hist(agg="last", op="more_than_ago", value="P2D"), view) == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert flip(hist(agg="last", op="within_last", value="P2D"), view) == datetime(2026, 11, 28, 10, tzinfo=UTC)


def test_flip_shortcuts_in_combinations() -> None:
    view = View({"score": 5, "seen": "2026-11-27T10:00:00+00:00"})
    relative = attr("seen", "within_last", "PT3H")
    assert flip({"all": [attr("score", "lt", 1), relative]}, view) is None  # false for good
    assert flip({"any": [attr("score", "gt", 1), relative]}, view) is None  # true for good
    assert flip({"all": [attr("score", "gt", 1), relative]}, view) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert flip({"not": relative}, view) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    both = {"any": [relative, attr("seen", "more_than_ago", "PT5H")]}
    assert flip(both, view) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert flip(both, view, datetime(2026, 11, 27, 13, tzinfo=UTC)) == datetime(2026, 11, 27, 15, tzinfo=UTC)


def test_following_flips_finds_every_change() -> None:
    """Stepping from flip to flip over a year sees every change a fine scan sees."""
    view = View(
        {"birthday": "1990-02-14", "seen": "2026-12-24T18:00:00"},
        records={"purchase": list(PURCHASES), "visit": [Record("2027-01-10T08:00:00+00:00")]},
    )
    raw = {
        "any": [
            {"all": [attr("birthday", "anniversary_within", "P3D"), {"not": hist(within="P60D")}]},
            {"history": "visit", "within": "PT36H"},
            attr("seen", "within_last", "P2D"),
        ]
    }
    node = node_of(raw)
    now, end = NOW, NOW + timedelta(days=400)
    stepped: list[datetime] = []
    value = evaluate(node, view, now, TZ)
    while True:
        due = next_flip(node, view, now, TZ)
        if due is None or due > end:
            break
        if evaluate(node, view, due, TZ) is not value:
            value = not value
            stepped.append(due)
        now = due
    scanned: list[datetime] = []
    moment, value = NOW, evaluate(node, view, NOW, TZ)
    while moment <= end:
        moment += timedelta(hours=1)
        if evaluate(node, view, moment, TZ) is not value:
            value = not value
            scanned.append(moment)
    assert len(stepped) == len(scanned) > 4
    assert all(timedelta(0) <= hour - exact < timedelta(hours=1) for exact, hour in zip(stepped, scanned, strict=True))
