"""Reading batch bodies (CSV, NDJSON, JSON array) into upserts, properties and row errors."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streamapp.core.ids import batch_message_id, batch_partition, batch_prefix, new_batch_id, partition_of
from streamapp.imports.files import Claim
from streamapp.imports.send_files import claim_batch_id
from streamapp.sending.batch_rows import RowChunk, RowRules, read_rows
from streamapp.settings import DatabaseSettings, DeclaredProperty
from streamapp.tabular.csvreader import FileRejected

DB = DatabaseSettings("members", False, {"firstname": "string", "score": "int"})
ZONE = ZoneInfo("Europe/Stockholm")
AT = "2026-11-27T10:00:00.000+00:00"


def read(tmp_path: Path, data: bytes, fmt: str) -> list[RowChunk]:
    path = tmp_path / "body"
    path.write_bytes(data)
    return list(read_rows(path, fmt, DB, ZONE, AT))  # type: ignore[arg-type]


def test_csv_rows_are_typed_and_bad_rows_named_by_line(tmp_path: Path) -> None:
    data = "\ufefforiginalId;email;firstname;score;other\nA;a@example.com;Ann;7;x\n;b@example.com;Bo;1;y\nC;c@example.com;Cy;many;z\n"
    [chunk] = read(tmp_path, data.encode(), "csv")
    assert chunk.ignored == ("other",)
    [upsert] = chunk.upserts
    assert (upsert.originalId, upsert.email, upsert.attributes) == (
        "A",
        "a@example.com",
        {"firstname": "Ann", "score": 7},
    )
    assert [(e.line, e.item) for e in chunk.rejected] == [(3, None), (4, None)]
    assert "empty identity" in chunk.rejected[0].reason and "'many' is not an integer" in chunk.rejected[1].reason


def test_csv_delimiter_is_sniffed_from_the_header(tmp_path: Path) -> None:
    for delimiter in (",", "\t", "|"):
        [chunk] = read(tmp_path, f"originalId{delimiter}firstname\nA{delimiter}Ann\n".encode(), "csv")
        assert chunk.upserts[0].attributes == {"firstname": "Ann"}


def test_csv_without_identity_column_or_in_another_encoding_is_refused_whole(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="identity column 'originalId' not found"):
        read(tmp_path, b"id;email\n1;a@example.com\n", "csv")
    with pytest.raises(FileRejected):
        read(tmp_path, "originalId;firstname\nA;Åsa\n".encode("cp1252"), "csv")


def test_ndjson_rows_keep_properties_and_name_bad_lines(tmp_path: Path) -> None:
    data = (
        b'{"originalId": "A", "properties": {"order": 1}}\n\n{"originalId": "B", "attributes": {"score": "x"}}\n{oops\n'
    )
    [chunk] = read(tmp_path, data, "ndjson")
    assert [u.originalId for u in chunk.upserts] == ["A"] and chunk.properties == [{"order": 1}]
    assert (chunk.rejected[0].line, chunk.rejected[0].reason) == (3, "/attributes/score: must be an integer")
    assert chunk.rejected[1].line == 4 and chunk.rejected[1].reason.startswith("malformed JSON")


def test_json_array_items_are_numbered_from_zero(tmp_path: Path) -> None:
    data = b'[{"originalId": "A", "email": "a@example.com"}, {"originalId": "B", "status": "bounced"}, 3]'
    [chunk] = read(tmp_path, data, "json")
    assert [u.originalId for u in chunk.upserts] == ["A"]
    assert [(e.item, e.reason) for e in chunk.rejected] == [
        (1, "/1/status: unknown field"),
        (2, "must be a JSON object"),
    ]


def test_json_body_that_is_not_an_array_is_refused_and_a_broken_one_keeps_what_came_before(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="must be a JSON array"):
        read(tmp_path, b'{"originalId": "A"}', "json")
    path = tmp_path / "broken"
    path.write_bytes(b'[{"originalId": "A"}, {"originalId": "B"}, {"originalId": ')
    rows = read_rows(path, "json", DB, ZONE, AT)
    assert [u.originalId for u in next(rows).upserts] == ["A", "B"]
    with pytest.raises(
        FileRejected, match=r"^item 2 \(counting from 0\): malformed JSON \(parse error: premature EOF\)$"
    ):
        next(rows)


def test_batch_ids_name_their_partition_and_prefix_their_messages() -> None:
    batch_id = new_batch_id(5)
    assert batch_partition(batch_id) == 5 and len(batch_id) == 24
    message_id = batch_message_id(3, batch_id, 1234)
    assert partition_of(message_id) == 3 and message_id[4:28] == batch_id
    assert message_id.encode().startswith(batch_prefix(3, batch_id))
    assert batch_partition("0005" + "g" * 20) is None and partition_of(message_id + "0") is None


def test_a_claim_gives_the_same_batch_id_every_time() -> None:
    claim = Claim(id="abc123def456", import_name="campaigns", original_name="f.csv", claimed_at=AT, path="/x")
    other = Claim(id="abc123def457", import_name="campaigns", original_name="f.csv", claimed_at=AT, path="/x")
    assert claim_batch_id(claim, 8) == claim_batch_id(claim, 8) != claim_batch_id(other, 8)
    assert batch_partition(claim_batch_id(claim, 8)) in range(8)


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_a_large_body_is_read_in_bounded_memory(tmp_path: Path, fmt: str) -> None:
    """Peak allocations stay a small fraction of the body: it is never read whole."""
    path = tmp_path / "large"
    rows = ({"originalId": f"row-{i:07d}", "email": f"row-{i}@example.com", "attributes": {"firstname": "x" * 250}}
            for i in range(60_000))  # fmt: skip
    with path.open("w") as f:
        if fmt == "csv":
            f.write("originalId,email,firstname\n")
            f.writelines(f"{r['originalId']},{r['email']},{r['attributes']['firstname']}\n" for r in rows)
        elif fmt == "ndjson":
            f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            f.write("[" + ",".join(json.dumps(r) for r in rows) + "]")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count = sum(len(chunk.upserts) for chunk in read_rows(path, fmt, DB, ZONE, AT))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 60_000 and size > 15_000_000
    assert peak < 6_000_000, f"peak {peak} bytes for a {size}-byte body"


def test_hostile_nesting_is_refused_without_exhausting_memory(tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(FileRejected, match=r"item 1 \(counting from 0\): nested deeper than 32 levels"):
        read(tmp_path, b'[{"originalId": "A"}, ' + deep + b"]", "json")
    [chunk] = read(tmp_path, b'{"originalId": "A", "properties": {"a": ' + deep + b"}}\n", "ndjson")
    assert chunk.rejected[0].line == 1 and "malformed JSON" in chunk.rejected[0].reason
    nested = b'{"x": ' * 40 + b"1" + b"}" * 40
    [chunk] = read(tmp_path, b'{"originalId": "A", "properties": ' + nested + b"}\n", "ndjson")
    assert chunk.rejected[0].reason == "/properties: nested deeper than 32 levels"


def test_rows_beyond_the_limits_are_rejected_rows(tmp_path: Path) -> None:
    """SPEC §3: a row over a limit is a rejected row with its reason; the others are sent."""
    big = "x" * 60_000
    rows = [
        {"originalId": "A", "properties": {f"p{i}": big for i in range(8)}},  # 480 KB: fits
        {"originalId": "B", "properties": {f"p{i}": big for i in range(9)}},  # 540 KB of properties
        {"originalId": "C", "properties": {f"p{i}": 1 for i in range(257)}},
        {"originalId": "D", "properties": {"code": "a\u0000b"}},
        {"originalId": "E", "email": "e@x.com\n"},
        {"originalId": "F", "attributes": {"firstname": "x" * 65_537}},
        {"originalId": "G", "attributes": {"firstname": big}, "properties": {f"p{i}": big for i in range(8)}},
    ]
    [chunk] = read(tmp_path, "".join(json.dumps(r) + "\n" for r in rows).encode(), "ndjson")
    assert [u.originalId for u in chunk.upserts] == ["A"]
    reasons = [(e.line, e.reason) for e in chunk.rejected]
    assert [line for line, _ in reasons] == [2, 3, 4, 5, 6, 7]
    assert reasons[0][1].startswith("/properties: the properties would take 540")
    assert reasons[1][1] == "/properties: at most 256 properties, not 257"
    assert reasons[2][1] == "/properties/code: must not contain control characters (tab and line breaks are allowed)"
    assert reasons[3][1].startswith("/email: 'e@x.com\\n' is not a valid e-mail address")
    assert reasons[4][1] == "/attributes/firstname: must be at most 65536 bytes in UTF-8"
    assert reasons[5][1].startswith("/properties: the properties and attributes would take 54")


def rows_of(chunks: list[RowChunk]) -> tuple[list[str], list[tuple[int | None, str]]]:
    """The originalIds sent and the (line or item, reason) of the rows rejected, over every chunk."""
    sent = [u.originalId for c in chunks for u in c.upserts]
    rejected = [(e.line if e.line is not None else e.item, e.reason) for c in chunks for e in c.rejected]
    return sent, rejected


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_a_second_row_for_one_original_id_is_rejected_and_the_first_sent(tmp_path: Path, fmt: str) -> None:
    ids = ["A", "B", "A", "C", "B", *[f"n{i}" for i in range(4000)], "C"]  # over two chunks
    items = [{"originalId": i, "attributes": {"firstname": f"{i}-{n}"}} for n, i in enumerate(ids)]
    if fmt == "csv":
        data = ("originalId;firstname\n" + "".join(f"{i['originalId']};x\n" for i in items)).encode()
    elif fmt == "ndjson":
        data = "".join(json.dumps(i) + "\n" for i in items).encode()
    else:
        data = json.dumps(items).encode()
    chunks = read(tmp_path, data, fmt)
    sent, rejected = rows_of(chunks)
    assert len(chunks) == 3 and sent == ["A", "B", "C", *[f"n{i}" for i in range(4000)]]
    first = {"json": 0, "ndjson": 1, "csv": 2}[fmt]  # items from 0, lines from 1 (CSV: after its header)
    duplicate = "duplicate originalId in this batch (its first row is sent)"
    assert rejected == [(first + 2, duplicate), (first + 4, duplicate), (first + len(ids) - 1, duplicate)]
    if fmt != "csv":
        assert chunks[0].upserts[0].attributes == {"firstname": "A-0"}


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_reading_stops_after_the_most_rows_a_batch_takes(tmp_path: Path, fmt: str) -> None:
    items = [{"originalId": f"r{i}"} for i in range(2500)]
    items[3] = {"originalId": ""}  # a rejected row counts as a row
    if fmt == "csv":
        data = ("originalId\n" + "".join(f"{i['originalId'] or 'x;y'}\n" for i in items)).encode()
    elif fmt == "ndjson":
        data = "".join(json.dumps(i) + "\n" for i in items).encode()
    else:
        data = json.dumps(items).encode()
    path = tmp_path / "body"
    path.write_bytes(data)
    chunks: list[RowChunk] = []
    with pytest.raises(FileRejected, match=r"^over 2,100 rows, the most one batch takes$"):
        chunks.extend(read_rows(path, fmt, DB, ZONE, AT, max_rows=2100))  # type: ignore[arg-type]
    sent, rejected = rows_of(chunks)
    assert len(sent) == 2099 and len(rejected) == 1 and sent[-1] == "r2099"


def test_an_ndjson_line_over_the_limit_is_a_rejected_row_never_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "body"
    with path.open("wb") as f:
        f.write(b'{"originalId": "A"}\n{"originalId": "B", "properties": {"x": "')
        f.write(b"y" * 30_000_000)
        f.write(b'"}}\n{"originalId": "C"}\n')
    tracemalloc.start()
    try:
        chunks = list(read_rows(path, "ndjson", DB, ZONE, AT))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows_of(chunks) == (["A", "C"], [(2, "a line longer than 1,048,576 bytes")])
    assert peak < 8_000_000, peak


def test_a_json_array_item_over_the_limit_stops_the_reading_there(tmp_path: Path) -> None:
    path = tmp_path / "body"
    with path.open("wb") as f:
        f.write(b'[{"originalId": "A"}, {"originalId": "B", "properties": {"x": "')
        f.write(b"y" * 30_000_000)
        f.write(b'"}}, {"originalId": "C"}]')
    chunks: list[RowChunk] = []
    tracemalloc.start()
    try:
        with pytest.raises(FileRejected, match=r"^item 1 \(counting from 0\): an item of more than 1,048,576 bytes$"):
            chunks.extend(read_rows(path, "json", DB, ZONE, AT))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows_of(chunks) == (["A"], [])
    assert peak < 8_000_000, peak
    big_but_fine = {"originalId": "A", "properties": {f"p{i}": "y" * 60_000 for i in range(7)}}  # 420 KB
    assert rows_of(read(tmp_path, json.dumps([big_but_fine, big_but_fine | {"originalId": "B"}]).encode(), "json")) == (
        ["A", "B"],
        [],
    )


def test_a_csv_header_wider_than_the_column_limit_refuses_the_body(tmp_path: Path) -> None:
    header = ";".join(["originalId", *(f"c{i}" for i in range(300))])
    with pytest.raises(FileRejected, match="301 columns, more than the 272 allowed"):
        read(tmp_path, f"{header}\nA{';' * 300}\n".encode(), "csv")


DECLARED = RowRules(
    {"code": DeclaredProperty("string", True), "amount": DeclaredProperty("float", False)}, "trigger 'receipt'"
)


def test_rows_are_checked_against_the_declared_properties(tmp_path: Path) -> None:
    items = [
        {"originalId": "A", "properties": {"code": "X1", "amount": 5}},
        {"originalId": "B", "properties": {"amount": 5}},
        {"originalId": "C", "properties": {"code": 7}},
        {"originalId": "D", "properties": {"code": "X4", "coupon": "free"}},
        {"originalId": "E"},
    ]
    path = tmp_path / "body"
    path.write_bytes("".join(json.dumps(i) + "\n" for i in items).encode())
    [chunk] = read_rows(path, "ndjson", DB, ZONE, AT, rules=DECLARED)
    assert [u.originalId for u in chunk.upserts] == ["A"] and chunk.properties == [{"code": "X1", "amount": 5.0}]
    assert [(e.line, e.reason) for e in chunk.rejected] == [
        (2, "/properties/code: is required by trigger 'receipt' (string)"),
        (3, "/properties/code: must be a string (declared string by trigger 'receipt')"),
        (4, "/properties/coupon: not declared by trigger 'receipt'"),
        (5, "/properties/code: is required by trigger 'receipt' (string)"),
    ]
    path.write_bytes(json.dumps(items).encode())
    [chunk] = read_rows(path, "json", DB, ZONE, AT, rules=DECLARED)
    assert [e.item for e in chunk.rejected] == [1, 2, 3, 4] and chunk.rejected[0].reason.startswith("/1/properties")


def test_csv_rows_carry_no_properties_so_a_required_one_rejects_each_row(tmp_path: Path) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"originalId;firstname\nA;Ann\n;Bo\n")
    [chunk] = read_rows(path, "csv", DB, ZONE, AT, rules=DECLARED)
    assert chunk.upserts == []
    assert [(e.line, e.reason) for e in chunk.rejected] == [
        (2, "/properties/code: is required by trigger 'receipt' (string)"),
        (3, "empty identity (column 'originalId')"),
    ]
    optional = RowRules({"amount": DeclaredProperty("float", False)}, "campaign 'news'")
    [chunk] = read_rows(path, "csv", DB, ZONE, AT, rules=optional)
    assert [u.originalId for u in chunk.upserts] == ["A"]


def test_invalid_utf8_in_a_json_array_stops_the_reading_with_its_reason(tmp_path: Path) -> None:
    """Found by tests/tabular/test_fuzz_readers.py: ijson raised UnicodeDecodeError, not a documented error."""
    path = tmp_path / "body"
    path.write_bytes(b'[{"originalId": "A"}, {"originalId": "\xed\xa0\x80"}]')  # an encoded surrogate
    rows = read_rows(path, "json", DB, ZONE, AT)
    with pytest.raises(FileRejected, match=r"^item 1 \(counting from 0\): not valid UTF-8"):
        list(rows)
