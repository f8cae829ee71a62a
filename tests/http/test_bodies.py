"""Reading request bodies (streamapp.http.bodies): early stops, error caps, the array scanner, encodings."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from unittest import mock

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.core.validation import FieldError
from streamapp.http import bodies
from streamapp.http.bodies import BatchRejected, parse_batch, parse_items, parse_json
from streamapp.http.errors import ApiError
from streamapp.http.server import observe, refuse_encoded

NDJSON = "application/x-ndjson"
JSON = "application/json"


def needs_id(item: Any, path: str) -> tuple[str | None, list[FieldError]]:
    """A converter like the recipients one: an object with a string originalId."""
    if isinstance(item, dict) and isinstance(item.get("originalId"), str):
        return item["originalId"], []
    return None, [FieldError(f"{path}/originalId", "is required")]


class Counting:
    """A converter that counts its calls (reading must stop early, not convert everything)."""

    def __init__(self, errors_per_item: int = 0) -> None:
        self.calls = 0
        self.errors_per_item = errors_per_item

    def __call__(self, item: Any, path: str) -> tuple[Any, list[FieldError]]:
        self.calls += 1
        if self.errors_per_item:
            return None, [FieldError(f"{path}/f{i}", "bad") for i in range(self.errors_per_item)]
        return item, []


@contextmanager
def window(size: int) -> Iterator[None]:
    with mock.patch.object(bodies, "WINDOW", size):
        yield


def refused(call: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


# -- the shapes a batch body may take ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "ctype", "items"),
    [
        (b'[1, "a,]", {"k": [2, {"x": "}"}]}, null]', JSON, [1, "a,]", {"k": [2, {"x": "}"}]}, None]),
        (b"  [ ]  ", JSON, []),
        (b"[]", "", []),
        (b'{"a": 1}\n\n  \n{"b": 2}\r\n', NDJSON, [{"a": 1}, {"b": 2}]),
        (b'{"a": 1}\n{"b": 2}', "", [{"a": 1}, {"b": 2}]),  # sniffed: not an array
        (b"", NDJSON, []),
        (b" \n\t\r\n", "", []),
        (b'["\\\\", "\\"]", "\\\\\\""]', JSON, ["\\", '"]', '\\"']),
    ],
)
def test_items_of_arrays_and_ndjson(body: bytes, ctype: str, items: list[Any]) -> None:
    assert parse_items(body, ctype) == items
    with window(3):  # every window boundary, escapes and strings cut in two
        assert parse_items(body, ctype) == items


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (b"[1,]", "/1", "malformed JSON: Input data was truncated"),
        (b"[1 2]", "/0", "trailing characters"),
        (b"[1}", "/0", "'}' closes the array"),
        (b"[1] x", "/", "data after the array"),
        (b'[1, "]', "/1", "the array is not closed"),
        (b"[{]}", "/0", "malformed JSON"),
    ],
)
def test_a_malformed_array_names_the_item(body: bytes, path: str, message: str) -> None:
    error = refused(lambda: parse_items(body, JSON))
    assert error.status == 422 and error.error == "malformed JSON"
    assert error.details[0].path == path and message in error.details[0].message


def test_a_json_body_that_is_not_an_array() -> None:
    error = refused(lambda: parse_items(b'{"originalId": "a"}', JSON))
    assert [d.as_dict() for d in error.details] == [{"path": "/", "message": "must be a JSON array (or send NDJSON)"}]


def test_ndjson_errors_name_lines_counting_blank_ones() -> None:
    body = b'{"originalId": "a"}\n\n{oops}\r\n   \n{"x": 1}\n[1,\n'
    error = refused(lambda: parse_batch(body, NDJSON, needs_id, what="recipients"))
    assert isinstance(error, BatchRejected) and error.items == 4
    assert error.error == "malformed NDJSON"
    assert [d.path for d in error.details] == ["line 3", "/2/originalId", "line 6"]


# -- stopping early ------------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", [JSON, NDJSON])
def test_item_10001_is_a_413_before_it_is_decoded(ctype: str) -> None:
    rows = [{"originalId": f"r{i}"} for i in range(20_000)]
    body = json.dumps(rows).encode() if ctype == JSON else b"\n".join(json.dumps(r).encode() for r in rows)
    convert = Counting()
    error = refused(lambda: parse_batch(body, ctype, convert))
    assert error.status == 413 and "10000" in error.error
    assert convert.calls == 10_000


def test_10000_items_with_a_few_bad_ones_are_a_422_naming_them() -> None:
    rows: list[Any] = [{"originalId": f"r{i}"} for i in range(10_000)]
    rows[17] = rows[9_999] = {"email": "x"}
    error = refused(lambda: parse_batch(json.dumps(rows).encode(), JSON, needs_id, what="recipients"))
    assert error.error == "invalid recipients: nothing was accepted"
    assert [d.path for d in error.details] == ["/17/originalId", "/9999/originalId"]


@pytest.mark.parametrize(("errors_per_item", "converted"), [(1, 1000), (7, 143), (2500, 1)])
def test_reading_stops_at_the_1000th_error(errors_per_item: int, converted: int) -> None:
    body = b"\n".join(b'{"n": %d}' % i for i in range(5_000))
    convert = Counting(errors_per_item)
    error = refused(lambda: parse_batch(body, NDJSON, convert, what="recipients"))
    assert isinstance(error, BatchRejected) and error.status == 422
    assert len(error.details) == 1000 and convert.calls == converted == error.items
    assert f"reading stopped at item {converted:,}, after the first 1,000 errors" in error.error


def test_800k_bad_lines_stop_at_1000_quickly_and_small() -> None:
    body = b"x\n" * 800_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = refused(lambda: parse_batch(body, NDJSON, needs_id))
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(error.details) == 1000 and error.details[-1].path == "line 1000"
    assert peak < 2 * 1024 * 1024  # was 221 MB for every error kept
    assert elapsed < 2.0  # was 6 s; this is tracemalloc-slowed, usually ~0.05 s


# -- hostile items: never decoded when they would cost too much ------------------------------------

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("name", "body", "ctype", "status"),
    [
        ("5M empty objects", b"[" + b"{}," * (5 * MiB) + b"{}]", JSON, 413),
        ("one item of 5M objects", b"[[" + b"{}," * (5 * MiB) + b"{}]]", JSON, 422),
        ("one line of 5M objects", b"[" + b"{}," * (5 * MiB) + b"{}]", NDJSON, 422),
        ("16 lines of 1M floats", b"\n".join([b"[" + b"0.5," * (MiB // 4 - 1) + b"0.5]"] * 16), NDJSON, 422),
        ("16 MB of blank lines", b"\n" * (16 * MiB), NDJSON, None),
        ("16 MB of spaces", b" " * (16 * MiB) + b"[]", JSON, None),
        ("nested 1M deep", b"[" * MiB + b"]" * MiB, JSON, 422),
    ],
)
def test_hostile_bodies_cost_little(name: str, body: bytes, ctype: str, status: int | None) -> None:
    tracemalloc.start()
    try:
        try:
            parse_items(body, ctype)
            outcome: int | None = None
        except ApiError as exc:
            outcome = exc.status
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome == status
    # one decode of the first body builds 400 MB; here: a window's numpy arrays and 10,000 items at most
    assert peak < 8 * MiB, f"{name}: peak {peak:,} bytes for a {len(body):,}-byte body"


def test_an_item_with_too_many_values_is_refused_by_count() -> None:
    item = b'{"originalId": "a", "attributes": {%s}}' % b",".join(b'"a%d": 1' % i for i in range(20_000))
    error = refused(lambda: parse_batch(item + b"\n" + item, NDJSON, needs_id))
    assert [d.path for d in error.details] == ["line 1", "line 2"]  # NDJSON reads on
    assert "more than 10,000 values" in error.details[0].message


def test_an_oversized_array_item_stops_reading() -> None:
    body = b'[{"originalId": "' + b"a" * (2 * MiB) + b'"}, {"originalId": 5}]'
    error = refused(lambda: parse_batch(body, JSON, needs_id))
    assert [d.as_dict() for d in error.details] == [
        {"path": "/0", "message": "item exceeds the limit of 1,048,576 bytes"}
    ]


def test_commas_and_brackets_in_strings_are_not_values() -> None:
    text = "[{,}]" * 5_000
    assert parse_items(json.dumps([{"originalId": "a", "note": text}]).encode(), JSON)[0]["note"] == text


# -- one JSON document ---------------------------------------------------------------------------


def test_documents() -> None:
    assert parse_json(b'{"a": [1, "x"]}') == {"a": [1, "x"]}
    error = refused(lambda: parse_json(b'{"email": '))
    assert error.error == "malformed JSON" and error.details[0].path == "/"
    big = json.dumps({"p": list(range(200_000))}).encode()
    error = refused(lambda: parse_json(big))
    assert error.status == 422 and "more than 100,000 values" in error.details[0].message
    fine = json.dumps({"p": "x," * 200_000, "q": list(range(1_000))}).encode()
    assert len(parse_json(fine)["q"]) == 1_000


# -- the event loop ------------------------------------------------------------------------------


async def test_parsing_gives_the_loop_back_every_few_milliseconds() -> None:
    """CPU time between two turns of the loop, not wall time: a loaded machine does not fail it."""
    hostile = [
        b"x\n" * 800_000,
        b"\n".join([b"[" + b"[]," * 300_000 + b"[]]"] * 5),
        b"\n".join(json.dumps({"originalId": f"r{i}", "pad": "y" * 800}).encode() for i in range(10_000)),
    ]
    longest = 0.0
    done = asyncio.Event()

    async def turns() -> None:
        nonlocal longest
        last = time.thread_time()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.thread_time()
            longest, last = max(longest, now - last), now

    ticker = asyncio.create_task(turns())
    for body in hostile:
        with suppress(ApiError):
            await bodies._drive(bodies._batch_steps(body, NDJSON, needs_id, "recipients", 10_000, 1000))
    done.set()
    await ticker
    assert longest < 0.05, f"the loop waited {longest * 1000:.0f} ms of CPU for its turn"


# -- Content-Encoding ----------------------------------------------------------------------------


def test_a_content_encoding_is_refused_from_the_header() -> None:
    def request(encoding: str | None, body: bool = True) -> web.Request:
        headers = {"Content-Encoding": encoding} if encoding else {}
        if not body:
            return make_mocked_request("POST", "/x", headers=headers)  # aiohttp's empty payload
        return make_mocked_request("POST", "/x", headers=headers, payload=mock.Mock())

    for encoding in ("gzip", "deflate", "br", "zstd", "identity, gzip", "x-custom"):
        with pytest.raises(ApiError) as caught:
            bodies.refuse_content_encoding(request(encoding))
        assert caught.value.status == 415 and caught.value.headers == {"Accept-Encoding": "identity"}
    for fine in (None, "identity", "Identity", ""):
        bodies.refuse_content_encoding(request(fine))
    bodies.refuse_content_encoding(request("gzip", body=False))


async def test_the_server_never_inflates_and_answers_415_before_reading() -> None:
    read: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        read.append(len(await request.read()))
        return web.json_response({"read": read[-1]})

    compressed = gzip.compress(b"[" + b"0," * 4_000_000 + b"0]")
    for middlewares in ([observe, refuse_encoded], []):
        app = web.Application(middlewares=middlewares, client_max_size=64 * MiB)
        app.router.add_post("/x", handler)
        server = TestServer(app)
        await server.start_server(auto_decompress=False)  # what ApiServer gives its AppRunner
        async with TestClient(server) as http:
            reply = await http.post("/x", data=compressed, headers={"Content-Encoding": "gzip"})
            answer = await reply.json()
            if middlewares:
                assert reply.status == 415 and "Content-Encoding" in answer["error"] and read == []
            else:  # without the check a handler sees the bytes as sent, never 8 MB inflated
                assert reply.status == 200 and answer == {"read": len(compressed)}
            plain = await http.post("/x", data=b"[1]", headers={"Content-Encoding": "identity"})
            assert plain.status == 200


# -- properties ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(json_values, max_size=20), indent=st.sampled_from([None, 1, 4]), size=st.integers(1, 64))
def test_arrays_read_item_by_item_equal_one_decode(items: list[Any], indent: int | None, size: int) -> None:
    body = json.dumps(items, indent=indent, ensure_ascii=False).encode()
    with window(size):
        assert parse_items(body, JSON) == msgspec.json.decode(body)
        lines = b"\n".join(json.dumps(i, ensure_ascii=False).encode() for i in items)
        assert parse_items(lines, NDJSON) == [msgspec.json.decode(line) for line in lines.splitlines()]


fragments = st.sampled_from([b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\n", b" ", b"1", b"null", b'"k"'])
hostile_bytes = st.one_of(
    st.binary(max_size=64),
    st.integers(64, 8192).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.integers(1, 2000).flatmap(lambda n: st.lists(fragments, min_size=n, max_size=n)).map(b"".join),
    # a short pattern repeated: `{},{},…`, `[[[[…`, `"k":1,"k":1,…` — what amplifies in a decoder
    st.tuples(st.lists(fragments, min_size=1, max_size=6).map(b"".join), st.integers(1, 3000)).map(
        lambda repeated: b"[" + repeated[0] * repeated[1] + b"]"
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=hostile_bytes, ctype=st.sampled_from([JSON, NDJSON, ""]), size=st.sampled_from([5, 64, 256 * 1024]))
def test_any_bytes_give_items_or_a_413_or_422_in_bounded_memory(body: bytes, ctype: str, size: int) -> None:
    tracemalloc.start()
    try:
        with window(size):
            try:
                parse_batch(body, ctype, needs_id, max_items=50)
            except ApiError as exc:
                assert exc.status in (413, 422)
                assert len(exc.details) <= 1000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # twice the input, plus room for one window's numpy arrays and at most 1,000 errors
    assert peak < 2 * len(body) + 512 * 1024


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(fragments | st.just(b"\xff") | st.just(b'\\\\"'), max_size=60).map(b"".join), size=st.integers(1, 16)
)
def test_an_array_is_accepted_exactly_when_msgspec_accepts_it(body: bytes, size: int) -> None:
    """The scanner only cuts; msgspec judges each piece: together they judge as one msgspec decode."""
    try:
        expected: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        expected = "refused"
    with window(size):
        try:
            got: Any = parse_items(body, JSON)
        except ApiError as exc:
            assert exc.status == 422
            got = "refused"
    assert got == (expected if isinstance(expected, list) else "refused")


def test_data_after_10000_items_is_malformed_not_413() -> None:
    body = json.dumps([{"originalId": f"r{i}"} for i in range(10_000)]).encode() + b" x"
    error = refused(lambda: parse_batch(body, JSON, needs_id))
    assert error.status == 422 and error.details[0].message == "malformed JSON: data after the array"
