"""The single-message body: validation, saveProps, idempotency keys and "the same body"."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest

from streamapp.core.validation import InvalidInput
from streamapp.sending.single import build_commands, parse_single
from streamapp.settings import DatabaseSettings, TriggerSettings

DB = DatabaseSettings("members", False, {"firstname": "string", "score": "int"})
ZONE = ZoneInfo("Europe/Stockholm")
TRIGGER = TriggerSettings("welcome", "members", "welcome", transactional=True)


def test_save_props_keeps_only_attributes_typed() -> None:
    body = {"originalId": "A", "properties": {"firstname": "Ann", "score": 3, "coupon": "X"}, "saveProps": True}
    single = parse_single(body, DB, ZONE, None)
    assert single.saved == {"firstname": "Ann", "score": 3} and single.properties["coupon"] == "X"
    upsert, message = build_commands(single, TRIGGER, 8, "2026-11-27T10:00:00.000+00:00")
    assert upsert.attributes == {"firstname": "Ann", "score": 3} and not upsert.createOnly
    assert message.attributes == {"firstname": "Ann", "score": 3} and message.transactional
    assert message.priority == "transactional" and message.notBefore is None


def test_without_save_props_the_upsert_only_creates() -> None:
    single = parse_single(
        {"originalId": "A", "email": "a@example.com", "properties": {"firstname": "x"}}, DB, ZONE, None
    )
    upsert, message = build_commands(single, TRIGGER, 8, "2026-11-27T10:00:00.000+00:00")
    assert upsert.createOnly and upsert.emailIfNew == "a@example.com" and upsert.attributes is msgspec.UNSET
    assert message.email == "a@example.com" and message.attributes is None


def test_delivery_time_without_offset_is_in_the_service_zone_and_a_past_one_means_now() -> None:
    year = datetime.now(UTC).year + 1  # within the horizon of a year (MAX_SEND_AHEAD)
    single = parse_single({"originalId": "A", "deliveryTime": f"{year}-01-02T08:00:00"}, DB, ZONE, None)
    _, message = build_commands(single, TRIGGER, 8, "2026-11-27T10:00:00.000+00:00")
    assert message.notBefore == f"{year}-01-02T07:00:00.000+00:00"
    single = parse_single({"originalId": "A", "deliveryTime": "2001-01-01T00:00:00Z"}, DB, ZONE, None)
    assert build_commands(single, TRIGGER, 8, "2026-11-27T10:00:00.000+00:00")[1].notBefore is None


def test_the_same_body_hashes_the_same_whatever_the_key_order_or_where_the_key_is() -> None:
    one = parse_single({"originalId": "A", "properties": {"a": 1, "b": 2}, "idempotencyKey": "k"}, DB, ZONE, None)
    two = parse_single({"properties": {"b": 2, "a": 1}, "originalId": "A"}, DB, ZONE, "k")
    other = parse_single({"originalId": "A", "properties": {"a": 1, "b": 3}}, DB, ZONE, "k")
    assert one.idempotency_key == two.idempotency_key == "k"
    assert one.body_hash == two.body_hash != other.body_hash


@pytest.mark.parametrize(
    ("body", "header", "path"),
    [
        ({"originalId": "A", "idempotencyKey": ""}, None, "/idempotencyKey"),
        ({"originalId": "A", "idempotencyKey": "a"}, "b", "/idempotencyKey"),
        ({"originalId": "A"}, "x" * 257, "/header/Idempotency-Key"),
        ({"originalId": "A", "saveProps": True, "properties": {"score": "high"}}, None, "/properties/score"),
        ([], None, "/"),
    ],
)
def test_bad_bodies_name_the_place(body: object, header: str | None, path: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_single(body, DB, ZONE, header)
    assert [d.path for d in raised.value.errors] == [path]


def _errors(body: object) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as raised:
        parse_single(body, DB, ZONE, None)
    return [(d.path, d.message) for d in raised.value.errors]


def test_properties_and_saved_values_are_bounded() -> None:
    """SPEC §3: at most 256 properties, strings ≤ 64 KiB without control characters, the message ≤ 512 KiB."""
    big = "x" * 60_000
    assert _errors({"originalId": "A", "properties": {f"p{i}": 1 for i in range(257)}}) == [
        ("/properties", "at most 256 properties, not 257")
    ]
    assert _errors({"originalId": "A", "properties": {"subject": "Hi\x00"}}) == [
        ("/properties/subject", "must not contain control characters (tab and line breaks are allowed)")
    ]
    assert _errors({"originalId": "A", "properties": {"n": {"deep": [10**30]}}}) == [
        ("/properties/n/deep/0", "must be an integer between -2^63 and 2^63-1")
    ]
    assert _errors({"originalId": "A", "email": "a@x.com\r\nRCPT TO:<b@y>"})[0][0] == "/email"
    parse_single({"originalId": "A", "properties": {f"p{i}": big for i in range(8)}}, DB, ZONE, None)  # 480 KB
    [(path, message)] = _errors({"originalId": "A", "properties": {f"p{i}": big for i in range(9)}})
    assert path == "/properties" and message.startswith("the properties would take 540")


def test_save_props_counts_the_values_twice() -> None:
    """The message carries the properties and the saved attributes: 300 KB saved is 600 KB in the message."""
    auto = DatabaseSettings("members", True, {})
    body = {"originalId": "A", "properties": {f"p{i}": "x" * 60_000 for i in range(5)}, "saveProps": True}
    with pytest.raises(InvalidInput) as raised:
        parse_single(body, auto, ZONE, None)
    [error] = raised.value.errors
    assert error.path == "/properties" and error.message.startswith("the properties would take 600")
    body["saveProps"] = False
    assert parse_single(body, auto, ZONE, None).saved == {}


def test_a_delivery_time_more_than_a_year_ahead_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_single({"originalId": "A", "deliveryTime": "2099-12-01T08:00:00"}, DB, ZONE, None)
    [error] = refused.value.errors
    assert error.path == "/deliveryTime" and error.message.startswith("must be at most 365 days ahead")
