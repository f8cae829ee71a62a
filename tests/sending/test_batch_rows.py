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
from streamapp.sending.batch_rows import RowChunk, read_rows
from streamapp.settings import DatabaseSettings
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
