"""Parsing and validating segment definitions (SPEC §9): every form accepted, every error named by its path."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from streamapp.segments import graph
from streamapp.segments.definition import Catalog, DefinitionError, parse_definition, to_json
from streamapp.segments.graph import CycleError, check_acyclic, dependency_order, find_cycle
from streamapp.segments.nodes import (
    All,
    AnyOf,
    AttributeLeaf,
    Comparison,
    HistoryLeaf,
    Not,
    SegmentLeaf,
    Where,
)

SCHEMA = {
    "firstname": "string",
    "score": "int",
    "ratio": "float",
    "optin": "bool",
    "birthday": "date",
    "lastLogin": "datetime",
}
CATALOG = Catalog(SCHEMA, {"purchase", "visit"}, {"vip", "churned"})

VALUES: dict[str, list[Any]] = {
    "string": ["sv", ["sv", "fi"], ["a", "b"]],
    "int": [10, [1, 2], [1, 5]],
    "float": [2.5, [1, 2.5], [0.5, 2]],
    "bool": [True, [True], None],
    "date": ["2026-01-31", ["2026-01-01", "2026-02-01"], ["2026-01-01", "2026-12-31"]],
    "datetime": ["2026-01-31T10:00:00+01:00", ["2026-01-01T00:00:00Z"], ["2026-01-01", "2026-01-31T12:00"]],
}
ATTRIBUTE_OF = {
    "string": "firstname",
    "int": "score",
    "float": "ratio",
    "bool": "optin",
    "date": "birthday",
    "datetime": "lastLogin",
}


def parse(raw: object, catalog: Catalog = CATALOG) -> Any:
    return parse_definition(raw, catalog)


def errors(raw: object, catalog: Catalog = CATALOG) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(raw, catalog)
    return caught.value.errors


def paths(raw: object, catalog: Catalog = CATALOG) -> list[str]:
    return [path for path, _ in errors(raw, catalog)]


def _cases() -> list[tuple[str, str, Any]]:
    """(type, op, value or ...) for every op that applies to each type."""
    scalar_ops = ["eq", "ne"]
    cases: list[tuple[str, str, Any]] = []
    for kind, (single, many, pair) in VALUES.items():
        cases += [(kind, op, single) for op in scalar_ops]
        cases += [(kind, op, many) for op in ("in", "not_in")]
        cases += [(kind, op, ...) for op in ("exists", "not_exists")]
        if kind != "bool":
            cases += [(kind, op, single) for op in ("lt", "lte", "gt", "gte")]
            cases.append((kind, "between", pair))
        if kind == "string":
            cases += [(kind, op, "x") for op in ("contains", "starts_with", "ends_with")]
        if kind in ("date", "datetime"):
            cases += [(kind, op, single) for op in ("before", "after")]
            cases += [(kind, op, "P7D") for op in ("within_last", "more_than_ago", "anniversary_within")]
    return cases


@pytest.mark.parametrize(("kind", "op", "value"), _cases())
def test_every_op_on_every_type(kind: str, op: str, value: Any) -> None:
    raw: dict[str, Any] = {"attribute": ATTRIBUTE_OF[kind], "op": op}
    if value is not ...:
        raw["value"] = value
    node = parse(raw)
    assert isinstance(node, AttributeLeaf)
    assert (node.type, node.test.op, node.builtin) == (kind, op, False)
    assert parse(to_json(node)) == node


def test_typed_values() -> None:
    assert parse({"attribute": "ratio", "op": "eq", "value": 2}).test == Comparison("eq", 2.0)
    assert parse({"attribute": "birthday", "op": "eq", "value": "2026-01-31"}).test == Comparison(
        "eq", date(2026, 1, 31)
    )
    moment = parse({"attribute": "lastLogin", "op": "before", "value": "2026-01-31T10:00:00+01:00"}).test.value
    assert moment == datetime(2026, 1, 31, 9, tzinfo=UTC)
    naive = parse({"attribute": "lastLogin", "op": "before", "value": "2026-01-31T10:00"}).test.value
    assert naive == datetime(2026, 1, 31, 10) and naive.tzinfo is None  # the service zone applies later
    day = parse({"attribute": "lastLogin", "op": "after", "value": "2026-01-31"}).test.value
    assert type(day) is date  # a whole day, compared with date-times
    assert parse({"attribute": "score", "op": "in", "value": [3, 1]}).test == Comparison("in", (3, 1))
    assert parse({"attribute": "createdAt", "op": "within_last", "value": "PT1H"}).test == Comparison(
        "within_last", timedelta(hours=1)
    )


def test_toml_native_dates() -> None:
    """TOML hands dates and date-times over as objects."""
    node = parse({"attribute": "birthday", "op": "between", "value": [date(2026, 1, 1), date(2026, 2, 1)]})
    assert node.test.value == (date(2026, 1, 1), date(2026, 2, 1))
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse({"attribute": "updatedAt", "op": "after", "value": moment}).test.value == moment


@pytest.mark.parametrize(
    ("name", "kind", "op", "value"),
    [
        ("email", "string", "ends_with", "@example.com"),
        ("email", "string", "exists", ...),
        ("status", "status", "eq", "active"),
        ("status", "status", "in", ["unsubscribed", "bounced"]),
        ("status", "status", "ne", "inactive"),
        ("createdAt", "datetime", "more_than_ago", "P30D"),
        ("updatedAt", "datetime", "anniversary_within", "P1D"),
        ("updatedAt", "datetime", "between", ["2026-01-01", "2026-02-01"]),
    ],
)
def test_builtin_fields(name: str, kind: str, op: str, value: Any) -> None:
    raw: dict[str, Any] = {"attribute": name, "op": op}
    if value is not ...:
        raw["value"] = value
    node = parse(raw)
    assert (node.attribute, node.type, node.builtin) == (name, kind, True)


def test_status_values_and_ops() -> None:
    assert errors({"attribute": "status", "op": "eq", "value": "gone"}) == [
        ("/value", "must be one of active, inactive, unsubscribed, bounced")
    ]
    assert paths({"attribute": "status", "op": "in", "value": ["active", "nope"]}) == ["/value/1"]
    assert paths({"attribute": "status", "op": "contains", "value": "act"}) == ["/op"]
    assert paths({"attribute": "status", "op": "gt", "value": "active"}) == ["/op"]


def test_unknown_attribute_unless_auto_create() -> None:
    assert errors({"attribute": "shoesize", "op": "eq", "value": "42"}) == [
        (
            "/attribute",
            "unknown attribute 'shoesize'; known: birthday, createdAt, email, firstname, lastLogin, optin, ratio, score, status, updatedAt",
        )
    ]
    auto = Catalog(SCHEMA, {"purchase"}, auto_create_attributes=True)
    node = parse({"attribute": "shoesize", "op": "starts_with", "value": "4"}, auto)
    assert node == AttributeLeaf("shoesize", "string", False, Comparison("starts_with", "4"))
    assert paths({"attribute": "shoesize", "op": "eq", "value": 42}, auto) == ["/value"]


def test_history_leaves() -> None:
    bare = parse({"history": "purchase"})
    assert bare == HistoryLeaf("purchase")
    full = parse(
        {
            "history": "purchase",
            "where": [
                {"field": "sku", "op": "starts_with", "value": "SHOE-"},
                {"field": "price", "op": "between", "value": [10, 20]},
                {"field": "custom26", "op": "exists"},
            ],
            "within": "P30D",
            "agg": "count",
            "op": "gte",
            "value": 2,
        }
    )
    assert full == HistoryLeaf(
        "purchase",
        (
            Where("sku", "string", Comparison("starts_with", "SHOE-")),
            Where("price", "float", Comparison("between", (10.0, 20.0))),
            Where("custom26", "string", Comparison("exists")),
        ),
        timedelta(days=30),
        None,
        "count",
        None,
        Comparison("gte", 2),
    )
    assert parse(to_json(full)) == full
    window = parse({"history": "visit", "between": ["2026-01-01", "2026-01-31T12:00:00+00:00"]})
    assert window.between == (date(2026, 1, 1), datetime(2026, 1, 31, 12, tzinfo=UTC))
    assert parse(to_json(window)) == window


@pytest.mark.parametrize("agg", ["sum", "min", "max", "avg"])
@pytest.mark.parametrize("field", ["price", "quantity", "total"])
def test_numeric_aggregates(agg: str, field: str) -> None:
    node = parse({"history": "purchase", "agg": agg, "field": field, "op": "gt", "value": 100})
    assert (node.agg, node.field, node.test) == (agg, field, Comparison("gt", 100.0))


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("before", "2026-01-01T00:00:00Z"),
        ("after", "2026-01-01"),
        ("between", ["2026-01-01", "2026-02-01"]),
        ("within_last", "P7D"),
        ("more_than_ago", "P30D"),
    ],
)
def test_last(op: str, value: Any) -> None:
    node = parse({"history": "mail.opened", "agg": "last", "op": op, "value": value})
    assert (node.agg, node.test.op) == ("last", op)


def test_engagement_types_are_always_known() -> None:
    for kind in ("mail.sent", "mail.opened", "mail.clicked", "mail.bounced", "mail.complained", "mail.unsubscribed"):
        assert parse({"history": kind, "within": "P90D"}) == HistoryLeaf(kind, within=timedelta(days=90))


def test_combinators_and_segments() -> None:
    node = parse({"all": [{"any": [{"segment": "vip"}, {"not": {"segment": "churned"}}]}, {"history": "visit"}]})
    assert node == All((AnyOf((SegmentLeaf("vip"), Not(SegmentLeaf("churned")))), HistoryLeaf("visit")))
    assert parse(to_json(node)) == node


def test_the_spec_example() -> None:
    spec = {
        "all": [
            {"attribute": "firstname", "op": "in", "value": ["sv", "fi"]},
            {"attribute": "score", "op": "gte", "value": 10},
            {"attribute": "birthday", "op": "anniversary_within", "value": "P7D"},
            {
                "history": "purchase",
                "where": [{"field": "sku", "op": "starts_with", "value": "SHOE-"}],
                "within": "P30D",
                "agg": "count",
                "op": "gte",
                "value": 2,
            },
            {"history": "purchase", "within": "P365D", "agg": "sum", "field": "total", "op": "gt", "value": 100},
            {"not": {"history": "mail.opened", "within": "P90D"}},
            {"any": [{"attribute": "status", "op": "eq", "value": "active"}, {"segment": "vip"}]},
        ]
    }
    node = parse(spec)
    assert graph.references(node) == {"vip"}
    assert graph.is_time_relative(node)
    assert not graph.is_attribute_only(node)
    assert parse(to_json(node)) == node


# -- errors, each at its exact place ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], [("", "must be an object with one of: attribute, history, segment, all, any, not")]),
        ({}, [("", "has none of the keys; a condition is exactly one of: attribute, history, segment, all, any, not")]),
        (
            {"attribute": "score", "history": "purchase"},
            [
                (
                    "",
                    "has both 'attribute' and 'history'; a condition is exactly one of: attribute, history, segment, all, any, not",
                )
            ],
        ),
        ({"all": []}, [("/all", "must not be empty")]),
        ({"any": {}}, [("/any", "must be a list of conditions")]),
        ({"all": [{"segment": "vip"}], "x": 1}, [("/x", "unknown key; allowed here: all")]),
        (
            {"not": [{"segment": "vip"}]},
            [("/not", "must be an object with one of: attribute, history, segment, all, any, not")],
        ),
        ({"segment": "nope"}, [("/segment", "unknown segment 'nope' of this database")]),
        ({"segment": 3}, [("/segment", "must be the name of a segment")]),
        (
            {"attribute": "score", "op": "eq", "value": 1, "valeu": 2},
            [("/valeu", "unknown key; allowed here: attribute, op, value")],
        ),
        ({"attribute": "score", "op": "eq"}, [("/value", "missing: eq needs a value")]),
        ({"attribute": "score", "value": 1}, [("/op", "missing")]),
        ({"attribute": "score", "op": "exists", "value": 1}, [("/value", "exists takes no value")]),
        (
            {"attribute": "score", "op": "equals", "value": 1},
            [
                (
                    "/op",
                    "unknown op 'equals'; one of after, anniversary_within, before, between, contains, ends_with, eq, exists, gt, gte, in, lt, lte, more_than_ago, ne, not_exists, not_in, starts_with, within_last",
                )
            ],
        ),
        ({"attribute": "score", "op": "eq", "value": "10"}, [("/value", "must be an integer")]),
        ({"attribute": "score", "op": "eq", "value": True}, [("/value", "must be an integer")]),
        ({"attribute": "score", "op": "eq", "value": 1.5}, [("/value", "must be an integer")]),
        ({"attribute": "ratio", "op": "eq", "value": float("nan")}, [("/value", "must be a number")]),
        ({"attribute": "optin", "op": "eq", "value": 1}, [("/value", "must be true or false")]),
        (
            {"attribute": "optin", "op": "gt", "value": True},
            [
                (
                    "/op",
                    "'gt' does not apply to bool attribute 'optin'; use one of eq, exists, in, ne, not_exists, not_in",
                )
            ],
        ),
        (
            {"attribute": "score", "op": "starts_with", "value": "1"},
            [
                (
                    "/op",
                    "'starts_with' does not apply to int attribute 'score'; use one of between, eq, exists, gt, gte, in, lt, lte, ne, not_exists, not_in",
                )
            ],
        ),
        (
            {"attribute": "firstname", "op": "within_last", "value": "P1D"},
            [
                (
                    "/op",
                    "'within_last' does not apply to string attribute 'firstname'; use one of between, contains, ends_with, eq, exists, gt, gte, in, lt, lte, ne, not_exists, not_in, starts_with",
                )
            ],
        ),
        ({"attribute": "birthday", "op": "eq", "value": "31/01/2026"}, [("/value", "must be a date (YYYY-MM-DD)")]),
        ({"attribute": "birthday", "op": "eq", "value": "2026-02-30"}, [("/value", "must be a date (YYYY-MM-DD)")]),
        (
            {"attribute": "birthday", "op": "eq", "value": "2026-01-01T00:00"},
            [("/value", "must be a date (YYYY-MM-DD)")],
        ),
        (
            {"attribute": "lastLogin", "op": "after", "value": "yesterday"},
            [("/value", "must be an ISO 8601 date-time (e.g. 2026-11-27T08:00:00+01:00)")],
        ),
        (
            {"attribute": "birthday", "op": "within_last", "value": "P1Y"},
            [
                (
                    "/value",
                    "'P1Y': years and months are not supported (their length varies); use days, e.g. P30D or P365D",
                )
            ],
        ),
        (
            {"attribute": "birthday", "op": "within_last", "value": "P401D"},
            [("/value", "'P401D' is out of range: durations go from PT1S to P400D")],
        ),
        (
            {"attribute": "birthday", "op": "more_than_ago", "value": "-P1D"},
            [("/value", "'-P1D': a duration cannot be negative here")],
        ),
        (
            {"attribute": "score", "op": "between", "value": [1]},
            [("/value", "must be a list [low, high] of two values, each an integer")],
        ),
        ({"attribute": "score", "op": "between", "value": [5, 1]}, [("/value", "low is greater than high")]),
        ({"attribute": "score", "op": "between", "value": [1, "x"]}, [("/value/1", "must be an integer")]),
        (
            {"attribute": "score", "op": "in", "value": []},
            [("/value", "must be a non-empty list of an integer values")],
        ),
        ({"attribute": "score", "op": "in", "value": 3}, [("/value", "must be a non-empty list of an integer values")]),
        (
            {"attribute": "score", "op": "not_in", "value": [1, "2", 3, None]},
            [("/value/1", "must be an integer"), ("/value/3", "must be an integer")],
        ),
        (
            {"history": "purchases"},
            [
                (
                    "/history",
                    "unknown history type 'purchases'; known: mail.bounced, mail.clicked, mail.complained, mail.opened, mail.sent, mail.unsubscribed, purchase, visit",
                )
            ],
        ),
        (
            {"history": "purchase", "within": "P1D", "between": ["2026-01-01", "2026-02-01"]},
            [("/between", "within and between exclude each other; give one of them")],
        ),
        ({"history": "purchase", "between": ["2026-02-01", "2026-01-01"]}, [("/between", "from is after to")]),
        (
            {"history": "purchase", "between": ["2026-02-01"]},
            [("/between", "must be a list [from, to] of two dates or date-times")],
        ),
        (
            {"history": "purchase", "between": ["2026-02-01", "soon"]},
            [("/between/1", "must be a date (YYYY-MM-DD) or an ISO 8601 date-time")],
        ),
        (
            {"history": "purchase", "within": "30 days"},
            [
                (
                    "/within",
                    "'30 days' is not an ISO 8601 duration of days, hours, minutes and seconds (e.g. PT30M, P7D or P1DT12H)",
                )
            ],
        ),
        (
            {"history": "purchase", "op": "gte", "value": 2},
            [
                ("/op", "without agg a history condition means at least one record; add agg to compare"),
                ("/value", "without agg a history condition means at least one record; add agg to compare"),
            ],
        ),
        (
            {"history": "purchase", "agg": "median", "op": "gt", "value": 1},
            [("/agg", "unknown aggregate 'median'; one of count, sum, min, max, avg, last")],
        ),
        ({"history": "purchase", "agg": "count"}, [("/op", "missing")]),
        (
            {"history": "purchase", "agg": "count", "field": "total", "op": "gt", "value": 1},
            [("/field", "count takes no field")],
        ),
        ({"history": "purchase", "agg": "count", "op": "gt", "value": 1.5}, [("/value", "must be an integer")]),
        (
            {"history": "purchase", "agg": "sum", "op": "gt", "value": 1},
            [("/field", "missing: sum needs one of price, quantity, total")],
        ),
        (
            {"history": "purchase", "agg": "sum", "field": "sku", "op": "gt", "value": 1},
            [("/field", "'sku' is not a numeric field: sum needs one of price, quantity, total")],
        ),
        (
            {"history": "purchase", "agg": "avg", "field": "total", "op": "contains", "value": 1},
            [("/op", "'contains' does not apply to agg avg; use one of between, eq, gt, gte, in, lt, lte, ne, not_in")],
        ),
        (
            {"history": "purchase", "agg": "last", "op": "anniversary_within", "value": "P1D"},
            [
                (
                    "/op",
                    "'anniversary_within' does not apply to agg last; use one of after, before, between, more_than_ago, within_last",
                )
            ],
        ),
        (
            {"history": "purchase", "agg": "last", "op": "within_last", "value": "2026-01-01"},
            [
                (
                    "/value",
                    "'2026-01-01' is not an ISO 8601 duration of days, hours, minutes and seconds (e.g. PT30M, P7D or P1DT12H)",
                )
            ],
        ),
        (
            {"history": "purchase", "where": {"field": "sku"}},
            [("/where", "must be a list of {field, op, value} tests")],
        ),
        (
            {"history": "purchase", "where": [{"field": "colour", "op": "eq", "value": "red"}]},
            [("/where/0/field", "unknown field 'colour'; one of sku, price, quantity, total, custom1..custom26")],
        ),
        (
            {"history": "purchase", "where": [{"field": "custom27", "op": "eq", "value": "x"}]},
            [("/where/0/field", "unknown field 'custom27'; one of sku, price, quantity, total, custom1..custom26")],
        ),
        (
            {"history": "purchase", "where": [{"op": "eq", "value": "x"}]},
            [("/where/0/field", "missing; one of sku, price, quantity, total, custom1..custom26")],
        ),
        (
            {"history": "purchase", "where": [{"field": "price", "op": "eq", "value": "10"}]},
            [("/where/0/value", "must be a number")],
        ),
        (
            {"history": "purchase", "where": [{"field": "sku", "op": "within_last", "value": "P1D"}]},
            [
                (
                    "/where/0/op",
                    "'within_last' does not apply to history field 'sku'; use one of between, contains, ends_with, eq, exists, gt, gte, in, lt, lte, ne, not_exists, not_in, starts_with",
                )
            ],
        ),
        (
            {"history": "purchase", "where": [{"field": "sku", "op": "eq", "value": "x", "and": 1}]},
            [("/where/0/and", "unknown key; allowed here: field, op, value")],
        ),
        ({"history": "purchase", "where": ["sku"]}, [("/where/0", "must be an object {field, op, value}")]),
    ],
)
def test_errors_name_their_place(raw: object, expected: list[tuple[str, str]]) -> None:
    assert errors(raw) == expected


def test_pointer_paths_nest() -> None:
    raw = {
        "all": [
            {"attribute": "score", "op": "gte", "value": 1},
            {"any": [{"segment": "vip"}, {"not": {"history": "purchase", "within": "P1Y"}}]},
            {"segment": "vip"},
            {"history": "purchase", "within": "P0D"},
        ]
    }
    assert paths(raw) == ["/all/1/any/1/not/within", "/all/3/within"]


def test_every_error_at_once() -> None:
    raw = {
        "all": [
            {"attribute": "nope", "op": "eq", "value": 1},
            {"history": "purchase", "within": "P1Y", "agg": "sum", "op": "gt", "value": "x"},
            {"attribute": "score", "op": "contains", "value": "x"},
            {"segment": "zz"},
            {"any": []},
            {"attribute": "score", "op": "eq"},
            {"frobnicate": 1},
        ]
    }
    assert paths(raw) == [
        "/all/0/attribute",
        "/all/1/within",
        "/all/1/field",
        "/all/1/value",
        "/all/2/op",
        "/all/3/segment",
        "/all/4/any",
        "/all/5/value",
        "/all/6",
    ]
    message = str(errors(raw) and DefinitionError(errors(raw)))
    assert message.startswith("/all/0/attribute: unknown attribute 'nope'")


def test_unknown_attribute_with_a_misspelt_op_reports_both() -> None:
    assert paths({"attribute": "nope", "op": "eqq", "value": 1}) == ["/attribute", "/op"]


def test_escaped_pointer() -> None:
    assert paths({"attribute": "score", "op": "eq", "value": 1, "a/b~c": 0}) == ["/a~1b~0c"]


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"segment": "vip"}
    for _ in range(depth - 1):
        node = {"all": [node]}
    return node


def test_depth_six_accepted_seven_refused() -> None:
    assert parse(_nested(6))
    assert errors(_nested(7)) == [("/all/0/all/0/all/0/all/0/all/0/all/0", "is nested too deep: at most 6 levels")]
    assert errors({"not": {"not": {"not": {"not": {"not": {"not": {"segment": "vip"}}}}}}}) == [
        ("/not/not/not/not/not/not", "is nested too deep: at most 6 levels")
    ]


def test_deep_nesting_is_refused_without_recursing() -> None:
    assert paths(_nested(50_000)) == ["/all/0" * 6]


def test_sixty_four_leaves_accepted_sixty_five_refused() -> None:
    leaf = {"attribute": "score", "op": "gt", "value": 1}
    assert len(parse({"all": [leaf] * 64}).children) == 64
    assert parse({"all": [{"any": [leaf] * 32}, {"not": {"all": [leaf] * 32}}]})
    assert errors({"all": [leaf] * 65}) == [("", "has 65 conditions; at most 64 are allowed")]
    assert paths({"all": [{"any": [leaf] * 33}, {"all": [leaf] * 32}]}) == [""]


# -- references and cycles ------------------------------------------------------------------------

NAMES = Catalog(SCHEMA, {"purchase"}, {"a", "b", "c", "d"})


def defs(**raw: Any) -> dict[str, Any]:
    return {name: parse_definition(spec, NAMES) for name, spec in raw.items()}


def test_references_and_order() -> None:
    found = defs(
        a={"all": [{"segment": "b"}, {"not": {"segment": "c"}}]},
        b={"segment": "c"},
        c={"attribute": "score", "op": "gt", "value": 1},
        d={"any": [{"segment": "a"}, {"segment": "c"}]},
    )
    assert graph.references(found["a"]) == {"b", "c"}
    assert graph.references(found["c"]) == frozenset()
    assert find_cycle(found) is None
    check_acyclic(found)
    order = dependency_order(found)
    assert sorted(order) == ["a", "b", "c", "d"]
    for name, node in found.items():
        assert all(order.index(ref) < order.index(name) for ref in graph.references(node))


def test_cycle_refused_with_its_path() -> None:
    found = defs(
        a={"all": [{"attribute": "score", "op": "gt", "value": 1}, {"any": [{"segment": "d"}, {"segment": "b"}]}]},
        b={"not": {"segment": "c"}},
        c={"segment": "a"},
        d={"attribute": "score", "op": "lt", "value": 9},
    )
    assert find_cycle(found) == ["a", "b", "c", "a"]
    with pytest.raises(CycleError) as caught:
        check_acyclic(found)
    assert caught.value.cycle == ["a", "b", "c", "a"]
    assert caught.value.errors == [("/all/1/any/1/segment", "segment cycle: a -> b -> c -> a")]
    with pytest.raises(CycleError):
        dependency_order(found)


def test_self_reference_is_a_cycle() -> None:
    found = defs(a={"segment": "a"})
    assert find_cycle(found) == ["a", "a"]
    with pytest.raises(DefinitionError) as caught:
        check_acyclic(found)
    assert caught.value.errors == [("/segment", "segment cycle: a -> a")]


def test_long_chain_without_recursion_limit() -> None:
    names = [f"s{i}" for i in range(3000)]
    catalog = Catalog(SCHEMA, set(), set(names))
    found = {name: parse_definition({"segment": names[i + 1]}, catalog) for i, name in enumerate(names[:-1])}
    found[names[-1]] = parse_definition({"segment": names[0]}, catalog)
    cycle = find_cycle(found)
    assert cycle is not None and len(cycle) == 3001
    del found[names[-1]]
    assert find_cycle(found) is None
    assert dependency_order(found)[0] == names[-2]


@pytest.mark.parametrize(
    ("raw", "attribute_only", "relative"),
    [
        ({"attribute": "score", "op": "gt", "value": 1}, True, False),
        (
            {
                "all": [
                    {"attribute": "birthday", "op": "before", "value": "2000-01-01"},
                    {"not": {"attribute": "email", "op": "exists"}},
                ]
            },
            True,
            False,
        ),
        ({"attribute": "birthday", "op": "anniversary_within", "value": "P7D"}, False, True),
        ({"attribute": "createdAt", "op": "within_last", "value": "P7D"}, False, True),
        ({"any": [{"attribute": "score", "op": "gt", "value": 1}, {"segment": "a"}]}, False, False),
        ({"history": "purchase"}, False, False),
        ({"history": "purchase", "between": ["2026-01-01", "2026-02-01"]}, False, False),
        ({"history": "purchase", "within": "P1D"}, False, True),
        ({"history": "purchase", "agg": "last", "op": "before", "value": "2026-01-01"}, False, False),
        ({"not": {"history": "purchase", "agg": "last", "op": "more_than_ago", "value": "P1D"}}, False, True),
    ],
)
def test_fast_path_flags(raw: object, attribute_only: bool, relative: bool) -> None:
    node = parse_definition(raw, NAMES)
    assert graph.is_attribute_only(node) is attribute_only
    assert graph.is_time_relative(node) is relative


def test_catalog_refuses_unknown_schema_types() -> None:
    with pytest.raises(ValueError, match="unknown type: shoe"):
        Catalog({"shoe": "size"}, set())
