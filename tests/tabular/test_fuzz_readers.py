"""Property-based fuzzing of every reader of rows: hostile bytes give rows or documented rejections.

The readers: the CSV reader (streamapp.tabular.csvreader) and the conversion of its rows
(streamapp.tabular.rows), as the import job chains them; the batch-send rows
(streamapp.sending.batch_rows: CSV, NDJSON, JSON array); the API's batch and document bodies
(streamapp.http.bodies). Whatever the bytes (any delimiter, quotes, BOMs, CR/LF/CRLF, NUL,
invalid text in each supported encoding, long fields, many columns, header only, nothing), a
reader yields rows, rejects rows with a reason, or refuses the input with its one documented
error (FileRejected, ApiError): never another exception. Memory stays within a small multiple of
the input (tracemalloc peak). `make check` runs a bounded number of examples; the `slow` tests more.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamapp.core.models import AppendHistory, UpsertRecipient
from streamapp.core.validation import MAX_LINE, FieldError
from streamapp.http.bodies import parse_batch, parse_json
from streamapp.http.errors import ApiError
from streamapp.http.schemas import RecipientBatchItem, checks_for
from streamapp.http.validate import validate
from streamapp.sending.batch_rows import Format, RowChunk, read_rows
from streamapp.settings import CODECS, DELIMITERS, DatabaseSettings, ImportSettings
from streamapp.tabular.csvreader import DelimitedFile, FileRejected, precheck
from streamapp.tabular.rows import convert_history, convert_recipients, plan_columns

ZONE = ZoneInfo("Europe/Stockholm")
AT = "2026-12-01T10:00:00.000+00:00"
DB = DatabaseSettings(
    "members", False, {"firstname": "string", "score": "int", "ratio": "float", "vip": "bool", "birthday": "date",
                       "seen": "datetime"},
)  # fmt: skip
OPEN_DB = DatabaseSettings("other", True, {})
COLUMNS = ["Id", "Mail", "Name", "Score", "Ratio", "Vip", "Born", "Seen", "originalId", "email", "firstname", "score"]
CHECKS = checks_for(DB, ("purchase",), ZONE)
#: Small enough that hypothesis reaches it: the reader's bound is the same code at any size.
SHORT_LINE = 200

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: The slow set's bound (a bounded example count in `make test`): 1,500 each, under a minute.
LONG = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------------

HOSTILE = [
    '"', '""', '"a', 'a"b', '"x""', "\x00", "\r", "\n", "\r\n", "\ufeff", ";", ",", "\t", "|", " ", "\x7f",
    "\u2028", "\u0085", "x" * (SHORT_LINE + 1), "1e999", "nan", "-0", "2026-13-45", "2026-02-29", "1,5", "ja",
    "a@b.se", "ä@ö.se", "@", "\udcff", "\udc81", "9" * 30, "\\", "=cmd()",
]  # fmt: skip
#: A lone surrogate stands for an undecodable byte (surrogateescape): invalid text in any encoding.
cells = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(HOSTILE)
names = st.sampled_from(COLUMNS) | cells


def quoted(draw: st.DrawFn, cell: str) -> str:
    how = draw(st.sampled_from(["plain", "plain", "quoted", "open"]))
    if how == "quoted":
        return '"' + cell.replace('"', '""') + '"'
    return '"' + cell if how == "open" else cell


def encoded(text: str, codec: str) -> bytes:
    """`text` in `codec`; characters it cannot hold go in UTF-8, lone surrogates as their raw byte."""
    out = bytearray()
    for char in text:
        try:
            out += char.encode(codec, "surrogateescape")
        except UnicodeEncodeError:
            out += char.encode("utf-8", "surrogateescape")
    return bytes(out)


@st.composite
def delimited(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(encoding, delimiter, bytes) of a hostile delimited file: a header, rows, then byte damage."""
    encoding = draw(st.sampled_from(sorted(CODECS)))
    delimiter = draw(st.sampled_from(DELIMITERS))
    width = draw(st.integers(1, 6) | st.just(300))
    header = draw(st.lists(names, min_size=1, max_size=width, unique=True))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=width + 1), max_size=10))
    ends = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    lines = [delimiter.join(quoted(draw, c) for c in row) for row in [header, *rows]]
    text = ""
    for line in lines:
        text += line + (draw(st.sampled_from(["\n", "\r\n", "\r"])) if ends == "mixed" else ends)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    if draw(st.integers(0, 4)) == 0:
        text = "\ufeff" + text
    data = bytearray(encoded(text, CODECS[encoding]))
    for at, junk in draw(st.lists(st.tuples(st.integers(0, max(len(data), 1)), st.binary(min_size=1, max_size=3)),
                                  max_size=2)):  # fmt: skip
        data[at:at] = junk
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return encoding, delimiter, bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(HOSTILE),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
row_objects = st.fixed_dictionaries(
    {},
    optional={
        "originalId": cells | json_values,
        "email": st.sampled_from(["a@b.se", "ä@ö.se", "bad", "", None]) | cells,
        "attributes": st.dictionaries(st.sampled_from(["firstname", "score", "vip", "seen", "x"]) | cells,
                                      json_values, max_size=4),
        "properties": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
        "status": st.sampled_from(["active", "unsubscribed", "x"]),
        "extra": json_values,
    },
)  # fmt: skip
items = row_objects | json_values


@st.composite
def json_bodies(draw: st.DrawFn) -> tuple[Format, bytes]:
    """(format, bytes) of a hostile JSON array or NDJSON body: items, then byte damage."""
    rows = draw(st.lists(items, max_size=8))
    fmt: Format = draw(st.sampled_from(["json", "ndjson"]))
    if fmt == "json":
        text = json.dumps(rows, indent=draw(st.sampled_from([None, 1])))
    else:
        text = "".join(json.dumps(r) + draw(st.sampled_from(["\n", "\r\n", "\n\n", " \n"])) for r in rows)
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for at, junk in draw(st.lists(st.tuples(st.integers(0, max(len(data), 1)), st.binary(min_size=1, max_size=3)),
                                  max_size=2)):  # fmt: skip
        data[at:at] = junk
    if draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return fmt, bytes(data)


# -- the readers, chained as their callers chain them ----------------------------------------------


def import_file(path: Path, encoding: str, delimiter: str, kind: str, header: bool, size: int = 4) -> tuple[int, int]:
    """What streamapp.imports.job does with a dropped file, without Kafka: (commands, rejected rows)."""
    imp = ImportSettings(
        name="fuzz", database="members", kind=kind, watch="fuzz", settle_seconds=1, pattern="*.csv",  # type: ignore[arg-type]
        encoding=encoding, delimiter=delimiter, header=header, mode="upsert", identity="Id" if header else "1",
        columns={"Mail": "email", "Name": "firstname", "Score": "score", "Vip": "vip", "Born": "birthday",
                 "Seen": "seen"} if header else {"2": "email"},
    )  # fmt: skip
    digest = precheck(path, encoding)
    source = DelimitedFile(
        path, encoding, delimiter, header, ragged_ok=kind == "history", max_line=SHORT_LINE if size < 100 else MAX_LINE
    )
    commands = rejected = 0
    try:
        plan = plan_columns(imp, DB, source.header, len(source.header)) if kind == "recipients" and header else None
        for batch in source.batches(size=size):
            check_batch(batch.lines, batch.rows, batch.rejected, source, kind)
            if kind == "history":
                done, bad = convert_history(batch.rows, batch.lines, imp, ZONE, AT, digest)
                assert all(isinstance(c, AppendHistory) for c in done)
            else:
                plan = plan or plan_columns(imp, DB, source.header, source.width or 0)
                done, bad = convert_recipients(batch.rows, batch.lines, plan, imp, ZONE, AT)
                assert all(isinstance(c, UpsertRecipient) and c.originalId.strip() for c in done)
            assert len(done) + len(bad) == len(batch.rows), "every row is a command or a rejected row"
            assert all(isinstance(reason, str) and reason for _, reason in bad)
            commands, rejected = commands + len(done), rejected + len(bad) + len(batch.rejected)
    finally:
        source.close()
    return commands, rejected


def check_batch(lines: list[int], rows: list[list[str]], bad: list[tuple[int, str]], source: DelimitedFile,
                kind: str) -> None:  # fmt: skip
    assert len(lines) == len(rows)
    assert all(0 < line <= source.lines.number for line in lines + [line for line, _ in bad])
    assert all(isinstance(reason, str) and reason for _, reason in bad)
    if kind != "history":
        assert all(len(row) == source.width for row in rows)


def batch_rows(path: Path, fmt: Format, db: DatabaseSettings, max_rows: int = 50) -> list[RowChunk]:
    return list(read_rows(path, fmt, db, ZONE, AT, max_rows=max_rows))


def recipient_item(item: Any, where: str) -> tuple[Any, list[FieldError]]:
    """The converter of `POST …/recipients` (streamapp.http.routes.recipients)."""
    checked = validate(item, RecipientBatchItem, checks=CHECKS, path=where)
    return checked.value, checked.errors


def only(errors: tuple[type[BaseException], ...], call: Callable[[], Any]) -> Any:
    """`call()`, or None when it raised one of the documented `errors` (anything else propagates)."""
    try:
        return call()
    except errors:
        return None


def written(folder: Path, data: bytes) -> Path:
    path = folder / "body"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with TemporaryDirectory() as name:
        yield Path(name)


# -- properties ------------------------------------------------------------------------------------


def csv_import_property(folder: Path, case: tuple[str, str, bytes], kind: str, header: bool) -> None:
    encoding, delimiter, data = case
    only((FileRejected,), lambda: import_file(written(folder, data), encoding, delimiter, kind, header))


@FAST
@given(case=delimited(), kind=st.sampled_from(["recipients", "history"]), header=st.booleans())
@example(case=("utf-8", ";", b""), kind="recipients", header=True)
@example(case=("utf-8", ";", b"Id;Mail\n"), kind="recipients", header=True)
@example(case=("utf-8", ";", b"\xef\xbb\xbfId;Mail\r\n1;\xff\r\n"), kind="recipients", header=True)
@example(case=("windows-1252", ";", b"Id;Mail\n1;\x81\n"), kind="recipients", header=True)
@example(case=("iso-8859-1", "|", b"Id|Mail\n1|\x00\n"), kind="history", header=False)
@example(case=("utf-8", ",", b'Id,Mail\n"1,a@b.se\n2,c@d.se\n'), kind="recipients", header=True)
def test_a_dropped_file_gives_rows_or_a_documented_rejection(
    folder: Path, case: tuple[str, str, bytes], kind: str, header: bool
) -> None:
    csv_import_property(folder, case, kind, header)


@pytest.mark.slow
@LONG
@given(case=delimited(), kind=st.sampled_from(["recipients", "history"]), header=st.booleans())
def test_a_dropped_file_gives_rows_or_a_documented_rejection_at_length(
    folder: Path, case: tuple[str, str, bytes], kind: str, header: bool
) -> None:
    csv_import_property(folder, case, kind, header)


def batch_csv_property(folder: Path, case: tuple[str, str, bytes]) -> None:
    _, _, data = case  # a batch body is UTF-8 and its delimiter sniffed, whatever it was written with
    chunks = only((FileRejected,), lambda: batch_rows(written(folder, data), "csv", DB))
    for chunk in chunks or []:
        check_chunk(chunk)


def check_chunk(chunk: RowChunk) -> None:
    assert len(chunk.upserts) == len(chunk.properties) == len(chunk.places)
    assert all(error.reason for error in chunk.rejected), "a rejected row says why"
    assert all(isinstance(u, UpsertRecipient) and u.originalId.strip() for u in chunk.upserts)


@FAST
@given(case=delimited())
def test_a_csv_batch_body_gives_rows_or_a_documented_rejection(folder: Path, case: tuple[str, str, bytes]) -> None:
    batch_csv_property(folder, case)


def batch_json_property(folder: Path, case: tuple[Format, bytes]) -> None:
    fmt, data = case
    for db in (DB, OPEN_DB):
        for chunk in only((FileRejected,), lambda db=db: batch_rows(written(folder, data), fmt, db)) or []:  # type: ignore[misc]
            check_chunk(chunk)


def test_raw_surrogate_bytes_in_a_json_array_body_are_a_rejection(folder: Path) -> None:
    """The minimal input the fuzzing found: `[{"originalId": "<ED A0 80>"}]`, U+D800 as raw bytes, which
    yajl lets through and Python cannot decode (it was a 500 from POST …/batches)."""
    with pytest.raises(FileRejected, match=r"item 0 .*not valid UTF-8"):
        batch_rows(written(folder, b'[{"originalId": "\xed\xa0\x80"}]'), "json", DB)


@FAST
@given(case=json_bodies())
@example(case=("json", b"[" * 100))
@example(case=("json", b'[{"originalId": "a"}, {"originalId": "a"}]'))
@example(case=("ndjson", b'{"originalId": "\\ud800"}\n'))
def test_a_json_batch_body_gives_rows_or_a_documented_rejection(folder: Path, case: tuple[Format, bytes]) -> None:
    batch_json_property(folder, case)


@pytest.mark.slow
@LONG
@given(case=json_bodies(), csv_case=delimited())
def test_batch_bodies_give_rows_or_a_documented_rejection_at_length(
    folder: Path, case: tuple[Format, bytes], csv_case: tuple[str, str, bytes]
) -> None:
    batch_json_property(folder, case)
    batch_csv_property(folder, csv_case)


def api_body_property(case: tuple[Format, bytes]) -> None:
    fmt, data = case
    content_type = "application/json" if fmt == "json" else "application/x-ndjson"
    for ctype in (content_type, ""):
        accepted = only((ApiError,), lambda ctype=ctype: parse_batch(data, ctype, recipient_item, what="recipients"))  # type: ignore[misc]
        assert accepted is None or all(isinstance(item, RecipientBatchItem) for item in accepted)
    only((ApiError,), lambda: parse_json(data))


@FAST
@given(case=json_bodies())
@example(case=("json", b"[" * 10_000))
@example(case=("ndjson", b"\x00\n\xff\n"))
def test_an_api_batch_or_document_body_gives_items_or_a_documented_rejection(case: tuple[Format, bytes]) -> None:
    api_body_property(case)


@pytest.mark.slow
@LONG
@given(case=json_bodies())
def test_an_api_batch_or_document_body_gives_items_or_a_documented_rejection_at_length(
    case: tuple[Format, bytes],
) -> None:
    api_body_property(case)


# -- memory ------------------------------------------------------------------------------------------

#: Bytes of input the memory checks read: large enough for a per-byte cost to dominate.
MEMORY_INPUT = 1 << 20


def peak(call: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


#: The hostile cells a reader reads on with (NUL and undecodable bytes refuse a whole file or body).
READABLE = [c for c in HOSTILE if c != "\x00" and not 0xD800 <= ord(c[0]) < 0xE000]


def hostile_csv(header: str) -> bytes:
    """About MEMORY_INPUT bytes of CSV: a header, then rows cycling through the hostile cells."""
    rows = [f"{i};{cell!r};x{cell}@b.se;{cell}" for i, cell in enumerate(READABLE * 4)]
    body = ("\n".join(rows) + "\n").encode()
    return header.encode() + b"\n" + body * (MEMORY_INPUT // len(body) + 1)


def hostile_ndjson() -> bytes:
    """About MEMORY_INPUT bytes of NDJSON rows, good and bad, each id once."""
    lines = []
    for i in range(MEMORY_INPUT // 60):
        cell = READABLE[i % len(READABLE)]
        lines.append(json.dumps({"originalId": f"{i}{cell}", "email": f"{i}@b.se", "attributes": {"firstname": cell}}))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("reader", ["import", "batch csv", "batch ndjson", "batch json", "api ndjson", "api json"])
def test_memory_stays_within_a_multiple_of_the_input(folder: Path, reader: str) -> None:
    """No reader holds more than a few times its input (Python-side allocations, numpy's included):
    each reads a hostile body of about 1 MiB whole; polars' own buffers are not counted."""
    csv_body = hostile_csv("Id;Name;Mail;Score" if reader == "import" else "originalId;firstname;email;score")
    ndjson_body = hostile_ndjson()
    json_body = b"[" + ndjson_body.strip().replace(b"\n", b",") + b"]"
    runs: dict[str, tuple[bytes, Callable[[], Any]]] = {
        "import": (csv_body, lambda: import_file(written(folder, csv_body), "utf-8", ";", "recipients", True, 20_000)),
        "batch csv": (csv_body, lambda: only((FileRejected,), lambda: batch_rows(written(folder, csv_body), "csv", DB, 10**6))),
        "batch ndjson": (ndjson_body, lambda: only((FileRejected,), lambda: batch_rows(written(folder, ndjson_body), "ndjson", DB, 10**6))),
        "batch json": (json_body, lambda: only((FileRejected,), lambda: batch_rows(written(folder, json_body), "json", DB, 10**6))),
        "api ndjson": (ndjson_body, lambda: only((ApiError,), lambda: parse_batch(
            ndjson_body, "application/x-ndjson", recipient_item, what="recipients", max_items=10**6))),
        "api json": (json_body, lambda: only((ApiError,), lambda: parse_batch(
            json_body, "application/json", recipient_item, what="recipients", max_items=10**6))),
    }  # fmt: skip
    body, run = runs[reader]
    used = peak(run)
    assert used < 16 * len(body) + (4 << 20), f"{reader}: peak {used:,} bytes for {len(body):,} bytes of input"
