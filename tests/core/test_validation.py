"""Schema validation of API input: each kind of bad field is named by its path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from streamapp.core.validation import (
    MAX_SEND_AHEAD,
    check_declared_properties,
    parse_history,
    parse_recipient,
    send_time_problem,
)
from streamapp.settings import DatabaseSettings, DeclaredProperty

ZONE = ZoneInfo("Europe/Stockholm")
DB = DatabaseSettings(
    "members",
    False,
    {"firstname": "string", "score": "int", "ratio": "float", "vip": "bool", "birthday": "date", "seen": "datetime"},
)
AT = "2026-11-27T10:00:00.000+00:00"


def errors(body: object, db: DatabaseSettings = DB, **kw: object) -> list[tuple[str, str]]:
    command, found = parse_recipient(db, body, at=AT, zone=ZONE, **kw)  # type: ignore[arg-type]
    assert (command is None) == bool(found)
    return [(e.path, e.message) for e in found]


def test_valid_partial_upsert_carries_only_given_fields() -> None:
    command, found = parse_recipient(DB, {"attributes": {"score": 3}}, at=AT, zone=ZONE, original_id="C1")
    assert found == [] and command is not None
    assert command.email is msgspec.UNSET and command.status is msgspec.UNSET
    assert command.attributes == {"score": 3}


@pytest.mark.parametrize(
    ("attributes", "path", "message"),
    [
        ({"score": "3"}, "/attributes/score", "must be an integer"),
        ({"score": True}, "/attributes/score", "must be an integer"),
        ({"ratio": "x"}, "/attributes/ratio", "must be a number"),
        ({"vip": 1}, "/attributes/vip", "must be true or false"),
        ({"firstname": 5}, "/attributes/firstname", "must be a string"),
        ({"birthday": "27/11/2026"}, "/attributes/birthday", "must be an ISO 8601 date (YYYY-MM-DD)"),
        ({"seen": "yesterday"}, "/attributes/seen", "must be an ISO 8601 date-time (e.g. 2026-11-27T08:00:00+01:00)"),
        ({"shoe": "42"}, "/attributes/shoe", "unknown attribute of database 'members'"),
    ],
)
def test_attribute_type_errors(attributes: dict[str, object], path: str, message: str) -> None:
    assert errors({"originalId": "C1", "attributes": attributes}) == [(path, message)]


def test_unknown_attribute_allowed_with_auto_create() -> None:
    auto = DatabaseSettings("members", True, {})
    command, found = parse_recipient(
        auto, {"originalId": "C1", "attributes": {"shoe": 42, "vip": True}}, at=AT, zone=ZONE
    )
    assert found == [] and command is not None and command.attributes == {"shoe": "42", "vip": "true"}
    _, found = parse_recipient(auto, {"originalId": "C1", "attributes": {"tags": ["a"]}}, at=AT, zone=ZONE)
    assert [(e.path, e.message) for e in found] == [("/attributes/tags", "must be a string")]


def test_dates_are_normalised_and_naive_times_use_service_zone() -> None:
    body = {"originalId": "C1", "attributes": {"birthday": "2001-02-03", "seen": "2026-06-01T12:00:00"}}
    command, _ = parse_recipient(DB, body, at=AT, zone=ZONE)
    assert command is not None
    assert command.attributes == {"birthday": "2001-02-03", "seen": "2026-06-01T12:00:00+02:00"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, [("/originalId", "is required"), ("/originalId", "must be a string")]),
        ({"originalId": ""}, [("/originalId", "must not be empty")]),
        ({"originalId": "x" * 257}, [("/originalId", "must be at most 256 characters")]),
        ({"originalId": 12}, [("/originalId", "must be a string")]),
        (
            {"originalId": "C1", "email": "not-an-address"},
            [("/email", "'not-an-address' is not a valid e-mail address")],
        ),
        ({"originalId": "C1", "colour": "red"}, [("/colour", "unknown field")]),
        (
            {"originalId": "C1", "status": "happy"},
            [("/status", "must be one of active, inactive, unsubscribed, bounced")],
        ),
    ],
)
def test_field_errors(body: dict[str, object], expected: list[tuple[str, str]]) -> None:
    assert errors(body) == expected


def test_batch_items_may_not_set_status_and_paths_carry_the_index() -> None:
    found = errors({"originalId": "C1", "status": "active"}, path="/7", allow_status=False)
    assert found == [("/7/status", "unknown field")]


def test_all_errors_of_one_body_are_listed() -> None:
    found = errors({"originalId": "", "email": "x@", "attributes": {"score": "a", "vip": "b"}})
    assert [p for p, _ in found] == ["/originalId", "/email", "/attributes/score", "/attributes/vip"]


def test_history_record_validation() -> None:
    types = ("purchase", "return")
    command, found = parse_history(
        DB,
        {"originalId": "C1", "sku": "A", "price": 10, "quantity": -1, "time": "2026-01-01 10:00:00"},
        types=types,
        at=AT,
        zone=ZONE,
    )
    assert found == [] and command is not None
    record = command.records[0]
    assert record.quantity == -1 and record.type == "purchase"
    assert record.time == "2026-01-01T09:00:00+00:00"  # naive = Stockholm, stored in UTC
    _, found = parse_history(
        DB,
        {"originalId": "C1", "type": "gift", "price": "10", "fields": {"custom27": "x"}},
        types=types,
        at=AT,
        zone=ZONE,
        path="/0",
    )
    assert [(e.path, e.message) for e in found] == [
        ("/0/type", "unknown history type (configured: purchase, return)"),
        ("/0/price", "must be a number"),
        ("/0/fields/custom27", "only custom1..custom26 are allowed"),
    ]


DECLARED = {
    "code": DeclaredProperty("string", required=True),
    "amount": DeclaredProperty("float", required=False),
    "due": DeclaredProperty("date", required=False),
    "at": DeclaredProperty("datetime", required=False),
}
OWNER = "trigger 'receipt'"


def declared_errors(properties: object) -> tuple[dict[str, object], list[tuple[str, str]]]:
    coerced, found = check_declared_properties(DECLARED, properties, "/properties", ZONE, owner=OWNER)
    return coerced, [(e.path, e.message) for e in found]


def test_declared_properties_are_typed_like_attributes() -> None:
    coerced, found = declared_errors({"code": "A1", "amount": 3, "due": "2026-12-01", "at": "2026-12-01 08:00"})
    assert found == []
    assert coerced == {"code": "A1", "amount": 3.0, "due": "2026-12-01", "at": "2026-12-01T08:00:00+01:00"}


def test_optional_declared_properties_may_be_missing_or_null() -> None:
    assert declared_errors({"code": "A1", "amount": None}) == ({"code": "A1"}, [])


@pytest.mark.parametrize(
    ("properties", "path", "message"),
    [
        ({}, "/properties/code", "is required by trigger 'receipt' (string)"),
        ({"code": None}, "/properties/code", "is required by trigger 'receipt' (string)"),
        ({"code": 12}, "/properties/code", "must be a string (declared string by trigger 'receipt')"),
        ({"code": "x", "amount": "12"}, "/properties/amount", "must be a number (declared float by trigger 'receipt')"),
        ({"code": "x", "due": "tomorrow"}, "/properties/due", "must be an ISO 8601 date (YYYY-MM-DD) (declared date"),
        ({"code": "x", "coupon": "y"}, "/properties/coupon", "not declared by trigger 'receipt'"),
    ],
)
def test_declared_properties_name_what_is_missing_wrong_or_unknown(properties: object, path: str, message: str) -> None:
    _, found = declared_errors(properties)
    assert len(found) == 1 and found[0][0] == path and found[0][1].startswith(message), found


def test_every_bad_declared_property_is_named_at_once() -> None:
    _, found = declared_errors({"amount": "x", "coupon": 1})
    assert sorted(p for p, _ in found) == ["/properties/amount", "/properties/code", "/properties/coupon"]


def test_undeclared_properties_pass_unchanged() -> None:
    value = {"anything": [1, {"nested": True}]}
    assert check_declared_properties(None, value, "/properties", ZONE) == (value, [])


def test_a_missing_properties_value_is_an_empty_object() -> None:
    _, found = check_declared_properties(DECLARED, None, "/0/properties", ZONE, owner="campaign 'news'")
    assert [(e.path, e.message) for e in found] == [("/0/properties/code", "is required by campaign 'news' (string)")]


def test_send_times_are_at_most_a_year_ahead() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert send_time_problem(now - timedelta(days=3000), now) is None  # past: now
    assert send_time_problem(now + MAX_SEND_AHEAD, now) is None
    problem = send_time_problem(now + MAX_SEND_AHEAD + timedelta(seconds=1), now)
    assert problem == "must be at most 365 days ahead (not after 2027-11-27)"
    assert send_time_problem(datetime(2099, 1, 1, tzinfo=UTC), now) == problem
