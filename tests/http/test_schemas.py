"""The models of streamapp.http.schemas: the OpenAPI document built from them, and the collecting validator.

The generated document replaced a hand-written one (the commit that removed it checked that every
operation, scope, status code, parameter, media type and field was kept), and the model-driven validation must accept what today's checks (streamapp.core.validation)
accept, naming the same bad fields, except where SPEC §3 asks for more (listed below).
"""

from __future__ import annotations

import datetime
import enum
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from msgspec import UNSET, Meta, UnsetType
from openapi_spec_validator import validate as validate_spec

from streamapp import __version__
from streamapp.core.models import MessageStatus, Status
from streamapp.core.validation import (
    MAX_STRING_BYTES,
    check_email,
    check_original_id,
    parse_history,
    parse_recipient,
)
from streamapp.http.route_specs import api_routes
from streamapp.http.routing import Content, Param, Reply, Route, openapi_document
from streamapp.http.schemas import (
    ATTRIBUTE_VALUES,
    MODELS,
    BatchRow,
    BatchStatus,
    Email,
    HistoryRecordIn,
    OriginalId,
    RecipientBatch,
    RecipientBatchItem,
    RecipientUpdate,
    TriggerMessage,
    batch_upsert,
    database_checks,
    history_append,
    recipient_upsert,
)
from streamapp.http.validate import Check, decode, explain, required_checks, validate
from streamapp.settings import AttributeType, Settings, load_settings
from tests.fixtures import config_text
from tests.sending.fixtures import smtp_extra, write_templates

AT = "2026-11-27T08:00:00.000+00:00"
ZONE = ZoneInfo("Europe/Stockholm")
POINTER = re.compile(r"^(/([^~/]|~0|~1)*)+$")


def _settings(folder: Path, smtp: bool) -> Settings:
    write_templates(folder)
    config = folder / "streamapp.toml"
    extra = smtp_extra(2525) if smtp else ""
    config.write_text(config_text("kafka://127.0.0.1:1", folder / "data", 1, "schemas", extra=extra))
    return load_settings(config, environ={})


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(tmp_path_factory.mktemp("smtp"), smtp=True)


@pytest.fixture(scope="module")
def checks(settings: Settings) -> dict[str, Check]:
    return database_checks(settings)["members"]


def _generated(settings: Settings) -> dict[str, Any]:
    return openapi_document(api_routes(settings), settings, __version__)


# -- the document --------------------------------------------------------------------------------


def test_generated_document_is_valid_openapi_31(settings: Settings) -> None:
    document = _generated(settings)
    assert document["openapi"] == "3.1.0"
    validate_spec(document)


def test_literal_types_are_the_one_source_of_statuses(settings: Settings) -> None:
    schemas = _generated(settings)["components"]["schemas"]
    assert sorted(schemas["RecipientUpdate"]["properties"]["status"]["enum"]) == sorted(get_args(Status))
    assert sorted(schemas["Recipient"]["properties"]["status"]["enum"]) == sorted(get_args(Status))
    assert sorted(schemas["Message"]["properties"]["status"]["enum"]) == sorted(get_args(MessageStatus))
    assert set(get_args(MessageStatus)) <= set(msgspec.structs.fields(BatchStatus) and BatchStatus.__struct_fields__)
    assert set(ATTRIBUTE_VALUES) == set(get_args(AttributeType))
    assert schemas["HistoryType"]["enum"] == list(settings.history_types)
    assert schemas["DatabaseName"]["enum"] == ["members", "other"]


def test_attribute_components_follow_the_configuration(settings: Settings) -> None:
    schemas = _generated(settings)["components"]["schemas"]
    members = schemas["Attributes.members"]
    assert members["additionalProperties"] is False
    assert members["properties"]["score"]["anyOf"] == [
        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}, {"type": "null"},
    ]  # fmt: skip
    assert members["properties"]["birthday"]["anyOf"][0]["format"] == "date"
    assert schemas["Attributes.other"]["additionalProperties"]  # auto_create_attributes
    assert {b["$ref"] for b in schemas["Attributes"]["anyOf"]} == {
        "#/components/schemas/Attributes.members",
        "#/components/schemas/Attributes.other",
    }


def test_a_route_declared_twice_or_with_a_wrong_path_is_refused(settings: Settings) -> None:
    ok = Reply(200, "ok", (Content(),))
    route = Route("GET", "/x/{a}", "x", "x", None, ok, params=(Param("a", "path"),))
    with pytest.raises(ValueError, match="twice"):
        openapi_document([route, route], settings, "1")
    with pytest.raises(ValueError, match="path parameters"):
        openapi_document([Route("GET", "/y/{b}", "y", "y", None, ok)], settings, "1")


# -- the collecting validator --------------------------------------------------------------------


def test_five_bad_fields_give_five_details(checks: dict[str, Check]) -> None:
    body = {"email": "nope", "attributes": {"score": "x", "nope": 1}, "status": "gone", "extra": 1}
    result = validate(body, RecipientUpdate, checks=checks)
    assert result.value is None
    assert sorted(e.path for e in result.errors) == [
        "/attributes/nope", "/attributes/score", "/email", "/extra", "/status",
    ]  # fmt: skip
    status = {e.path: e.message for e in result.errors}["/status"]
    assert status.startswith("must be one of ") and set(status[15:].split(", ")) == set(get_args(Status))


def test_errors_are_capped_at_1000(checks: dict[str, Check]) -> None:
    items = [{"originalId": "", "email": f"bad{i}"} for i in range(750)]  # two bad fields each
    result = validate(items, RecipientBatch, checks=checks)
    assert len(result.errors) == 1000 and result.truncated
    assert result.errors[0].path == "/0/originalId" and result.errors[1].path == "/0/email"
    assert all(POINTER.match(e.path) for e in result.errors)


def test_paths_are_json_pointers(settings: Settings) -> None:
    checks = database_checks(settings)["other"]  # auto_create_attributes: any name
    body = [{"originalId": "a"}, {"originalId": "b", "attributes": {"a/b~c": "x" * (MAX_STRING_BYTES + 1), "~": [1]}}]
    result = validate(body, RecipientBatch, checks=checks)
    assert [e.path for e in result.errors] == ["/1/attributes/a~1b~0c", "/1/attributes/~0"]
    unknown = validate({"attributes": {"a/b": 1}}, RecipientUpdate, checks=database_checks(settings)["members"])
    assert [e.path for e in unknown.errors] == ["/attributes/a~1b"]  # check_attributes' own error, as a pointer
    assert validate(3, RecipientBatchItem, checks=checks).errors[0].path == "/"


def test_valid_bodies_round_trip(checks: dict[str, Check]) -> None:
    body = {"email": "ann@example.com", "attributes": {"firstname": "Ann", "score": 7, "vip": None}, "status": "active"}
    result = validate(body, RecipientUpdate, checks=checks)
    assert result.errors == [] and isinstance(result.value, RecipientUpdate)
    assert msgspec.to_builtins(result.value) == body
    history = {"originalId": "C-1", "type": "return", "sku": "S", "quantity": -1.0, "fields": {"custom3": "x"}}
    record = validate(history, HistoryRecordIn, checks=checks).value
    assert record is not None and msgspec.to_builtins(record) == {**history, "price": None, "total": None}
    appended, errors = history_append(record, "members", AT)
    assert errors == [] and appended is not None and appended.records[0].time == AT


def test_values_are_normalized_by_their_checks(checks: dict[str, Check]) -> None:
    body = {"originalId": "a", "time": "2026-11-27 09:00", "attributes": {"lastSeen": "2026-11-27T09:00:00Z"}}
    history = validate({k: body[k] for k in ("originalId", "time")}, HistoryRecordIn, checks=checks).value
    assert history is not None and history.time == "2026-11-27T08:00:00+00:00"  # Stockholm is UTC+1 in November
    item = validate({k: body[k] for k in ("originalId", "attributes")}, RecipientBatchItem, checks=checks).value
    assert item is not None and item.attributes == {"lastSeen": "2026-11-27T09:00:00+00:00"}


def test_literal_enums_and_unknown_fields_are_enforced(checks: dict[str, Check]) -> None:
    assert validate({"status": "unsubscribed"}, RecipientUpdate, checks=checks).errors == []
    assert [e.path for e in validate({"status": "Active"}, RecipientUpdate, checks=checks).errors] == ["/status"]
    errors = validate({"originalId": "a", "status": "active"}, RecipientBatchItem, checks=checks).errors
    assert [(e.path, e.message) for e in errors] == [("/status", "unknown field")]
    fields = validate({"originalId": "a", "fields": {"custom27": "x"}}, HistoryRecordIn, checks=checks).errors
    assert [(e.path, e.message) for e in fields] == [("/fields/custom27", "only custom1..custom26 are allowed")]


def test_decode_reads_bytes_typed_first_and_explains_failures(checks: dict[str, Check]) -> None:
    ok = decode(b'[{"originalId": "a", "attributes": {"score": 1}}]', RecipientBatch, checks=checks)
    assert ok.errors == [] and ok.value is not None and ok.value[0].attributes == {"score": 1}
    bad = decode(b'[{"originalId": 1}, {"originalId": "b", "email": "x"}]', RecipientBatch, checks=checks)
    assert [e.path for e in bad.errors] == ["/0/originalId", "/1/email"]
    malformed = decode(b'[{"originalId": 1}, {"originalId": ', RecipientBatch, checks=checks)
    assert [e.path for e in malformed.errors] == ["/"] and "malformed JSON" in malformed.errors[0].message


def test_a_model_with_checks_needs_them_bound() -> None:
    assert required_checks(RecipientBatchItem) == {"attributes", "email"}
    with pytest.raises(LookupError, match="attributes"):
        validate({"originalId": "a"}, RecipientBatchItem)


def test_spec_3_limits_are_core_validations(checks: dict[str, Check]) -> None:
    """Bytes, control characters, counts, integers beyond a float: the rules of streamapp.core.validation."""
    huge = 10**400
    history = validate({"originalId": "a", "price": huge, "sku": "\x1f"}, HistoryRecordIn, checks=checks).errors
    assert [e.path for e in history] == ["/price", "/sku"]
    body = {"originalId": "a", "attributes": {"ratio": huge, "firstname": "\u00e9" * 40_000}}  # 80,000 bytes
    attribute = validate(body, RecipientBatchItem, checks=checks).errors
    assert [e.path for e in attribute] == ["/attributes/ratio", "/attributes/firstname"]
    many = {f"a{i}": 1 for i in range(257)}
    assert [e.path for e in validate({"attributes": many}, RecipientUpdate, checks=checks).errors] == ["/attributes"]
    properties = {"originalId": "a", "properties": {"p": ["x" * (MAX_STRING_BYTES + 1)]}}
    assert [e.path for e in validate(properties, TriggerMessage, checks=checks).errors] == ["/properties/p/0"]
    assert validate({"email": "anna@ex\u00e4mple.se"}, RecipientUpdate, checks=checks).errors == []  # IDN


def test_properties_are_limited_in_depth(checks: dict[str, Check]) -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    errors = validate({"originalId": "a", "properties": deep}, TriggerMessage, checks=checks).errors
    assert [(e.path, e.message) for e in errors] == [("/properties", "nested deeper than 32 levels")]


# -- strategies: arbitrary JSON, and bodies that are valid but for a few fields ---------------------

scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
    | st.sampled_from([
        "", " ", "a", "C-1", "ann@example.com", "a@b", "a b@c.se", "active", "bounced", "purchase", "nope",
        "2026-11-27T08:00:00+01:00", "2026-11-27", "2026-13-01", "custom1", "custom27", "x\n", "\x00", "firstname",
    ])
)  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a good value, sometimes any JSON value: bodies with one or two bad fields."""
    return st.one_of(good, good, good, json_values)


def _object(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Objects of these fields (each value `_mostly` good), sometimes with an unknown field or a key missing."""
    fields = st.fixed_dictionaries(
        {k: _mostly(v) for k, v in required.items()}, optional={k: _mostly(v) for k, v in optional.items()}
    )
    unknown = st.dictionaries(st.sampled_from(["x", "originalId", "status", "properties"]), scalars, max_size=1)
    return st.one_of(fields, fields, fields, st.builds(lambda a, b: {**a, **b}, fields, unknown), json_values)


texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=5)
numbers = st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.none()
original_ids = st.sampled_from(["C-1", "x", "a b", "x" * 256, "x" * 257, "  ", "a\tb"])
emails = st.sampled_from(["ann@example.com", "a.b+c@mail.example.se", None, "nope", "a@b"])
date_times = st.sampled_from(["2026-11-27T09:00:00Z", "2026-11-27 09:00", "2026-11-27T09:00:00+01:00", "nope"])
attributes = st.fixed_dictionaries({}, optional={
    "firstname": _mostly(texts | st.none()), "score": _mostly(st.integers(-10, 10)), "ratio": _mostly(numbers),
    "vip": _mostly(st.booleans()), "birthday": _mostly(st.sampled_from(["1990-05-01", "2026-02-30"])),
    "lastSeen": _mostly(date_times), "unknown": scalars,
})  # fmt: skip
recipient = {"email": emails, "attributes": attributes}
recipient_updates = _object({}, {**recipient, "status": st.sampled_from(get_args(Status))})
batch_items = _object({"originalId": original_ids}, recipient)
custom = st.dictionaries(st.sampled_from(["custom1", "custom26", "custom27", "sku"]), _mostly(texts), max_size=3)
history_records = _object({"originalId": original_ids}, {
    "type": st.sampled_from(["purchase", "return", "visit"]), "time": date_times, "sku": texts | st.none(),
    "price": numbers, "quantity": numbers, "total": numbers, "fields": custom,
})  # fmt: skip
properties = st.dictionaries(st.text(max_size=4), json_values, max_size=3)
trigger_messages = _object({"originalId": original_ids}, {
    "email": emails, "properties": properties, "saveProps": st.booleans(), "deliveryTime": date_times | st.none(),
    "idempotencyKey": st.sampled_from(["k", "", "x" * 257, None]),
})  # fmt: skip
batch_rows = _object({"originalId": original_ids}, {**recipient, "properties": properties})


def _comparable(value: Any) -> bool:
    """Bodies on which today's checks and the models must name the same paths: not those with keys with
    `/` or `~` (today's paths do not escape them as JSON pointers do)."""
    if isinstance(value, dict):
        return all(not re.search("[/~]", k) and _comparable(v) for k, v in value.items())
    return all(_comparable(v) for v in value) if isinstance(value, list) else True


# -- against today's checks (streamapp.core.validation) -------------------------------------------

FIXTURE_OK = hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FIXTURE_OK
@given(body=recipient_updates.filter(_comparable))
def test_updates_agree_with_parse_recipient(settings: Settings, body: Any) -> None:
    db, checks = settings.databases["members"], database_checks(settings)["members"]
    before, old_errors = parse_recipient(db, body, at=AT, zone=settings.service.zone, original_id="C-1")
    result = validate(body, RecipientUpdate, checks=checks)
    assert (recipient_upsert(result.value, "members", "C-1", AT) if result.value else None) == before
    assert {e.path for e in result.errors} == {e.path for e in old_errors}


@FIXTURE_OK
@given(body=batch_items.filter(_comparable))
def test_batch_items_agree_with_parse_recipient(settings: Settings, body: Any) -> None:
    db, checks = settings.databases["members"], database_checks(settings)["members"]
    before, old_errors = parse_recipient(db, body, at=AT, zone=settings.service.zone, path="/7", allow_status=False)
    result = validate(body, RecipientBatchItem, checks=checks, path="/7")
    assert (batch_upsert(result.value, "members", AT) if result.value else None) == before
    assert {e.path for e in result.errors} == {e.path for e in old_errors}


@FIXTURE_OK
@given(body=history_records.filter(_comparable))
def test_history_agrees_with_parse_history(settings: Settings, body: Any) -> None:
    db, checks = settings.databases["members"], database_checks(settings)["members"]
    types, zone = settings.history_types, settings.service.zone
    before, old_errors = parse_history(db, body, types=types, at=AT, zone=zone)
    result = validate(body, HistoryRecordIn, checks=checks)
    after, errors = history_append(result.value, "members", AT) if result.value else (None, result.errors)
    if before is None or after is None:
        assert before is after is None
    else:
        assert msgspec.structs.replace(after.records[0], id="") == msgspec.structs.replace(before.records[0], id="")
    assert {e.path for e in errors} == {e.path for e in old_errors}


@given(st.text(max_size=300) | st.sampled_from([" \t", "a\n", "\u00a0", "x" * 257, "\u3000y"]))
def test_original_id_pattern_is_check_original_id(value: str) -> None:
    assert (validate(value, OriginalId).errors == []) == (check_original_id(value, "/") == [])


@FIXTURE_OK
@given(value=st.from_regex(r"[a-z.+\u00e4-]{0,6}@?[A-Za-z0-9.\u00e4-]{0,8}", fullmatch=True) | st.text(max_size=300))
def test_the_email_model_is_check_email(checks: dict[str, Check], value: str) -> None:
    assert (validate(value, Email, checks=checks).errors == []) == (check_email(value, "/") == [])


# -- the walk follows msgspec --------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(msgspec.Struct, tag="point", forbid_unknown_fields=True):
    x: int
    y: Annotated[float, Meta(ge=0, le=10)] = 0.0


class Line(msgspec.Struct, tag="line"):
    points: Annotated[list[Point], Meta(min_length=2, max_length=3)]


class KitchenSink(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One of each kind of type the validator walks."""

    n: Annotated[int, Meta(gt=-5, lt=100, multiple_of=2)] = 0
    f: float | None = None
    s: Annotated[str, Meta(min_length=2, max_length=5, pattern="^[a-c]+$")] | UnsetType = UNSET
    either: int | str = 0
    kind: Literal["a", "b", 3] = "a"
    colour: Colour = Colour.RED
    when: datetime.datetime | None = None
    day: datetime.date | None = None
    uid: uuid.UUID | None = None
    pair: tuple[int, str] | None = None
    tags: frozenset[str] = frozenset()
    counts: Annotated[dict[Annotated[str, Meta(max_length=3)], int], Meta(max_length=3)] = {}
    shape: Point | Line | None = None
    nested: list[dict[str, list[Point]]] = []
    anything: Any = None


points = _object({"x": st.integers(-3, 3)}, {"y": st.floats(-1, 11) | st.integers(-1, 11), "type": st.just("point")})
sinks = _object({}, {
    "n": st.integers(-6, 101), "f": numbers, "s": st.sampled_from(["ab", "abc", "a", "abcabc", "abd"]),
    "either": st.integers() | texts, "kind": st.sampled_from(["a", "b", 3, "c", 4]),
    "colour": st.sampled_from(["red", "blue", "green"]), "when": st.sampled_from(["2026-01-01T00:00:00Z", None, "x"]),
    "day": st.sampled_from(["2026-01-01", "2026-01-01T00:00:00Z", None]),
    "uid": st.sampled_from(["a3bb1f5e-0b1e-4a4e-9c5e-6b6f4c1c6b1e", "x", None]),
    "pair": st.sampled_from([[1, "a"], [1, 2], [1], None]), "tags": st.lists(texts | scalars, max_size=3),
    "counts": st.dictionaries(st.text(max_size=4), st.integers(), max_size=4),
    "shape": st.sampled_from([
        {"type": "point", "x": 1}, {"type": "line", "points": [{"x": 1}, {"x": 2, "y": 11}]}, {"type": "circle"},
        {"type": "line", "points": [{"x": 1}, {"x": 2}]}, {"x": 1}, None,
    ]),
    "nested": st.lists(st.dictionaries(st.text(max_size=2), st.lists(points, max_size=2), max_size=2), max_size=2),
    "anything": json_values,
})  # fmt: skip
MODELS_AND_BODIES: dict[Any, st.SearchStrategy[Any]] = {
    KitchenSink: sinks, list[KitchenSink]: st.lists(sinks, max_size=3), RecipientUpdate: recipient_updates,
    RecipientBatch: st.lists(batch_items, max_size=3), HistoryRecordIn: history_records,
    TriggerMessage: trigger_messages, BatchRow: batch_rows,
}  # fmt: skip
models_and_bodies = st.sampled_from(list(MODELS_AND_BODIES)).flatmap(
    lambda kind: st.tuples(st.just(kind), MODELS_AND_BODIES[kind])
)
NO_OP: dict[str, Check] = dict.fromkeys(
    ("attributes", "email", "text", "historyType", "datetime", "properties"), lambda v, p: (v, [])
)


@hypothesis_settings(max_examples=800, deadline=None)
@given(model_and_body=models_and_bodies)
def test_the_walk_accepts_exactly_what_msgspec_accepts(model_and_body: tuple[Any, Any]) -> None:
    kind, value = model_and_body
    try:
        msgspec.convert(value, kind)
        accepted = True
    except msgspec.ValidationError:
        accepted = False
    checks = NO_OP if required_checks(kind) else {}
    assert (validate(value, kind, checks=checks).errors == []) == accepted
    walked = explain(value, kind, checks=checks)  # the walk alone, without msgspec's message to fall back on
    assert (walked == []) == accepted, walked
    assert all(POINTER.match(e.path) or e.path == "/" for e in walked)


@FIXTURE_OK
@given(model_and_body=models_and_bodies.filter(lambda mb: mb[0] not in (KitchenSink, list[KitchenSink])))
def test_the_validator_never_raises_on_any_json(checks: dict[str, Check], model_and_body: tuple[Any, Any]) -> None:
    kind, value = model_and_body
    result = validate(value, kind, checks=checks)
    assert (result.value is None) == bool(result.errors)


def test_every_model_has_a_schema() -> None:
    msgspec.json.schema_components(MODELS, ref_template="#/components/schemas/{name}")
