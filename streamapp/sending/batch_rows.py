"""Rows of a batch send (trigger batch, campaign), read from a file on disk in chunks.

A batch body arrives by HTTP (spooled to disk first, so a 100 MB body is never in memory) or
as a dropped file. Three formats: CSV (header row: `originalId`, `email`, attribute names;
delimiter sniffed from the header), NDJSON and a JSON array of `{originalId, email?,
attributes?, properties?}`. Each chunk carries the upserts of its good rows, their template
`properties`, and a RowError for each bad row; a body that cannot be read at all raises
FileRejected before any row is produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

import ijson
import msgspec
from ijson.common import ObjectBuilder

from streamapp.core.models import RowError, UpsertRecipient
from streamapp.core.validation import MAX_DEPTH, check_properties, check_size, parse_recipient
from streamapp.settings import DatabaseSettings, ImportSettings
from streamapp.tabular.csvreader import DelimitedFile, FileRejected, precheck
from streamapp.tabular.rows import convert_recipients, plan_columns

Format = Literal["csv", "ndjson", "json"]
CHUNK_ROWS = 2000
DELIMITERS = (";", ",", "\t", "|")
IDENTITY = "originalId"


@dataclass
class RowChunk:
    upserts: list[UpsertRecipient] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[RowError] = field(default_factory=list)
    #: CSV columns that are neither `originalId`, `email` nor an attribute (first chunk only).
    ignored: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.upserts) + len(self.rejected)


def read_rows(
    path: Path, fmt: Format, db: DatabaseSettings, zone: ZoneInfo, at: str, decoded: bool = False
) -> Iterator[RowChunk]:
    """Chunks of rows in body order; FileRejected when the body cannot be read at all.

    `decoded`: the caller already checked that the whole CSV decodes (the import job does).
    """
    if fmt == "csv":
        return _csv_rows(path, db, zone, at, decoded)
    if fmt == "ndjson":
        return _ndjson_rows(path, db, zone, at)
    return _json_array_rows(path, db, zone, at)


# -- CSV: the import's reader and typed conversion -------------------------------------------------


def sniff_delimiter(path: Path, encoding: str = "utf-8-sig") -> str:
    """The candidate that occurs most in the header line (`;` when there is only one column)."""
    with path.open(encoding=encoding, errors="replace", newline="") as f:
        header = f.readline()
    return max(DELIMITERS, key=header.count)


def csv_schema(db: DatabaseSettings, delimiter: str) -> ImportSettings:
    """The import schema of a batch CSV: named columns, `originalId` and `email` by name."""
    return ImportSettings(
        name=f"batch:{db.name}", database=db.name, kind="recipients", watch="", settle_seconds=0, pattern="*.csv",
        encoding="utf-8", delimiter=delimiter, header=True, mode="upsert", identity=IDENTITY,
        columns={"email": "email"},
    )  # fmt: skip


def _csv_rows(path: Path, db: DatabaseSettings, zone: ZoneInfo, at: str, decoded: bool) -> Iterator[RowChunk]:
    if not decoded:
        precheck(path, "utf-8")
    schema = csv_schema(db, sniff_delimiter(path))
    source = DelimitedFile(path, "utf-8", schema.delimiter, header=True)
    try:
        plan = plan_columns(schema, db, source.header, len(source.header or []))
        for batch in source.batches(CHUNK_ROWS):
            commands, bad = convert_recipients(batch.rows, batch.lines, plan, schema, zone, at)
            rejected = [RowError(line=line, reason=reason) for line, reason in sorted(batch.rejected + bad)]
            upserts = [c for c in commands if isinstance(c, UpsertRecipient)]
            yield RowChunk(upserts, [{} for _ in upserts], rejected, plan.ignored)
    finally:
        source.close()


# -- JSON: one object per row --------------------------------------------------------------------


def parse_row(
    db: DatabaseSettings, item: Any, at: str, zone: ZoneInfo, path: str
) -> tuple[UpsertRecipient | None, dict[str, Any], str | None]:
    """(upsert, properties, None) for a good row, (None, {}, reason) for a bad one.

    The limits are SPEC §3's (streamapp.core.validation): the row's message carries its properties and
    the attributes it writes, in one Kafka record and later in the ledger, so together they are bounded.
    """
    if not isinstance(item, dict):
        return None, {}, "must be a JSON object"
    fields = dict(item)
    properties = fields.pop("properties", {})
    upsert, errors = parse_recipient(db, fields, at=at, zone=zone, path=path, allow_status=False)
    errors += check_properties(properties, f"{path}/properties")
    if not errors and upsert is not None and upsert.attributes:
        values = {"properties": properties, "attributes": upsert.attributes}
        errors = check_size(values, f"{path}/properties", "the properties and attributes")
    if errors or upsert is None:
        return None, {}, "; ".join(f"{e.path}: {e.message}" for e in errors)
    return upsert, properties, None


def _ndjson_rows(path: Path, db: DatabaseSettings, zone: ZoneInfo, at: str) -> Iterator[RowChunk]:
    chunk = RowChunk()
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = msgspec.json.decode(line)
            except (msgspec.DecodeError, RecursionError) as exc:
                chunk.rejected.append(RowError(line=number, reason=f"malformed JSON: {exc}"))
            else:
                _add(chunk, parse_row(db, item, at, zone, ""), RowError(line=number, reason=""))
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = RowChunk()
    if len(chunk):
        yield chunk


def _json_array_rows(path: Path, db: DatabaseSettings, zone: ZoneInfo, at: str) -> Iterator[RowChunk]:
    with path.open("rb") as f:
        start = f.read(4096).lstrip()
        if not start.startswith(b"["):
            raise FileRejected("the body must be a JSON array, NDJSON (application/x-ndjson) or CSV (text/csv)")
        f.seek(0)
        chunk = RowChunk()
        index = -1
        try:
            for index, item in enumerate(array_items(f)):
                _add(chunk, parse_row(db, item, at, zone, f"/{index}"), RowError(item=index, reason=""))
                if len(chunk) >= CHUNK_ROWS:
                    yield chunk
                    chunk = RowChunk()
        except (ijson.JSONError, NestedTooDeep) as exc:
            yield chunk
            first = str(exc).strip().splitlines()[0]  # yajl adds a picture of the place on more lines
            problem = first if isinstance(exc, NestedTooDeep) else f"malformed JSON ({first})"
            raise FileRejected(f"item {index + 1} (counting from 0): {problem}") from None
    if len(chunk):
        yield chunk


class NestedTooDeep(ValueError):
    pass


def array_items(f: BinaryIO) -> Iterator[Any]:
    """The items of a top-level JSON array, one at a time, each nested at most MAX_DEPTH deep.

    Built from ijson's prefix-free events: `ijson.items` keeps a path string per event, which
    costs memory quadratic in the nesting depth of a hostile body.
    """
    events = ijson.basic_parse(f, use_float=True)
    if next(events, (None, None))[0] != "start_array":
        raise FileRejected("the body must be a JSON array")
    depth = 0  # inside the current item
    builder = ObjectBuilder()
    for event, value in events:
        if depth == 0 and event == "end_array":
            return
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > MAX_DEPTH:
                raise NestedTooDeep(f"nested deeper than {MAX_DEPTH} levels")
        elif event in ("end_map", "end_array"):
            depth -= 1
        builder.event(event, value)
        if depth == 0:
            yield builder.value
            builder = ObjectBuilder()


def _add(chunk: RowChunk, parsed: tuple[UpsertRecipient | None, dict[str, Any], str | None], where: RowError) -> None:
    upsert, properties, reason = parsed
    if upsert is None:
        where.reason = reason or "invalid row"
        chunk.rejected.append(where)
    else:
        chunk.upserts.append(upsert)
        chunk.properties.append(properties)
