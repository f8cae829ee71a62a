"""Rows of a batch send (trigger batch, campaign), read from a file on disk in chunks.

A batch body arrives by HTTP (spooled to disk first, so a 100 MB body is never in memory) or
as a dropped file. Three formats: CSV (header row: `originalId`, `email`, attribute names;
delimiter sniffed from the header), NDJSON and a JSON array of `{originalId, email?,
attributes?, properties?}`. Each chunk carries the upserts of its good rows, their template
`properties`, and a RowError for each bad row; a body that cannot be read at all raises
FileRejected before any row is produced.

Bounded work (README "Limits"): a CSV line or an NDJSON line of more than MAX_LINE is a rejected row
and is never read whole; a JSON array item of more than MAX_LINE bytes stops the reading there; a CSV
header of more than MAX_COLUMNS columns refuses the body; reading stops after MAX_BATCH_ROWS rows;
a second row for one originalId is rejected ("duplicate originalId in this batch"), the first is
sent. Properties are checked against what the trigger or campaign declares (SPEC §2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

import ijson
import msgspec
from ijson.common import ObjectBuilder

from streamapp.core.models import RowError, UpsertRecipient
from streamapp.core.validation import (
    MAX_BATCH_ROWS,
    MAX_COLUMNS,
    MAX_DEPTH,
    MAX_LINE,
    FieldError,
    check_declared_properties,
    check_properties,
    check_size,
    parse_recipient,
)
from streamapp.sending.first_rows import SeenIds
from streamapp.settings import DatabaseSettings, DeclaredProperty, ImportSettings
from streamapp.tabular.csvreader import DelimitedFile, FileRejected, precheck
from streamapp.tabular.rows import convert_recipients, plan_columns

Format = Literal["csv", "ndjson", "json"]
CHUNK_ROWS = 2000
DELIMITERS = (";", ",", "\t", "|")
IDENTITY = "originalId"
DUPLICATE = "duplicate originalId in this batch (its first row is sent)"


@dataclass(frozen=True)
class RowRules:
    """What a row's `properties` must be: the declaration of the trigger or campaign (None: anything),
    and how reasons name it ("trigger 'welcome'")."""

    declared: Mapping[str, DeclaredProperty] | None = None
    owner: str = "the trigger"


@dataclass
class RowChunk:
    upserts: list[UpsertRecipient] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[RowError] = field(default_factory=list)
    #: CSV columns that are neither `originalId`, `email` nor an attribute (first chunk only).
    ignored: tuple[str, ...] = ()
    #: Where each upsert's row is (a RowError without a reason: its line or item).
    places: list[RowError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.rejected)

    def add(self, upsert: UpsertRecipient, properties: dict[str, Any], place: RowError) -> None:
        self.upserts.append(upsert)
        self.properties.append(properties)
        self.places.append(place)

    def keep(self, kept: list[bool], reason: str) -> None:
        """Keep the upserts marked True; the others become rejected rows with `reason`."""
        if all(kept):
            return
        rows = list(zip(self.upserts, self.properties, self.places, strict=True))
        self.upserts, self.properties, self.places = [], [], []
        for (upsert, properties, place), keep in zip(rows, kept, strict=True):
            if keep:
                self.add(upsert, properties, place)
            else:
                self.rejected.append(RowError(reason=reason, line=place.line, item=place.item))
        self.rejected.sort(key=_position)


def _position(error: RowError) -> int:
    return error.line if error.line is not None else error.item if error.item is not None else -1


def read_rows(
    path: Path,
    fmt: Format,
    db: DatabaseSettings,
    zone: ZoneInfo,
    at: str,
    decoded: bool = False,
    *,
    rules: RowRules = RowRules(),
    max_rows: int = MAX_BATCH_ROWS,
) -> Iterator[RowChunk]:
    """Chunks of rows in body order, one row per originalId; FileRejected when the body cannot be
    read at all, or (after the chunks before) where reading stops.

    `decoded`: the caller already checked that the whole CSV decodes (the import job does).
    """
    if fmt == "csv":
        chunks = _csv_rows(path, db, zone, at, decoded, rules)
    elif fmt == "ndjson":
        chunks = _ndjson_rows(path, db, zone, at, rules)
    else:
        chunks = _json_array_rows(path, db, zone, at, rules)
    return _first_rows(chunks, max_rows)


def first_recipient_write(chunks: Iterator[RowChunk]) -> RowError | None:
    """Where the first good row that writes the recipient (an `email` or attributes) is, or None.

    A token with `send` but not `recipients:write` may send to recipients, not rewrite them
    (SPEC §4): the route reads the spooled body once with this before sending any of it.
    Rejected rows write nothing, so they do not count; a body that stops being readable
    stops the scan (the send then reports it as usual).
    """
    try:
        for chunk in chunks:
            for upsert, place in zip(chunk.upserts, chunk.places, strict=True):
                if upsert.email is not msgspec.UNSET or upsert.attributes:
                    return place
    except FileRejected:
        return None
    return None


def _first_rows(chunks: Iterator[RowChunk], max_rows: int) -> Iterator[RowChunk]:
    """At most `max_rows` rows, and only the first row of each originalId (SeenIds)."""
    seen, rows = SeenIds(), 0
    for chunk in chunks:
        if rows + len(chunk) > max_rows:
            _trim(chunk, max_rows - rows)
            chunk.keep(seen.take([u.originalId for u in chunk.upserts]), DUPLICATE)
            yield chunk
            raise FileRejected(f"over {max_rows:,} rows, the most one batch takes")
        rows += len(chunk)
        chunk.keep(seen.take([u.originalId for u in chunk.upserts]), DUPLICATE)
        yield chunk


def _trim(chunk: RowChunk, room: int) -> None:
    """Keep the first `room` rows of the chunk (good or rejected), in body order."""
    places = sorted([(_position(p), 0, i) for i, p in enumerate(chunk.places)] +
                    [(_position(e), 1, i) for i, e in enumerate(chunk.rejected)])[:room]  # fmt: skip
    good = {i for _, kind, i in places if kind == 0}
    bad = {i for _, kind, i in places if kind == 1}
    chunk.rejected = [e for i, e in enumerate(chunk.rejected) if i in bad]
    rows = list(zip(chunk.upserts, chunk.properties, chunk.places, strict=True))
    chunk.upserts, chunk.properties, chunk.places = [], [], []
    for i, row in enumerate(rows):
        if i in good:
            chunk.add(*row)


# -- CSV: the import's reader and typed conversion -------------------------------------------------


def sniff_delimiter(path: Path, encoding: str = "utf-8-sig") -> str:
    """The candidate that occurs most in the header line (`;` when there is only one column)."""
    with path.open(encoding=encoding, errors="replace", newline="") as f:
        header = f.readline(MAX_LINE + 1)  # a longer header is refused by the reader
    return max(DELIMITERS, key=header.count)


def csv_schema(db: DatabaseSettings, delimiter: str) -> ImportSettings:
    """The import schema of a batch CSV: named columns, `originalId` and `email` by name."""
    return ImportSettings(
        name=f"batch:{db.name}", database=db.name, kind="recipients", watch="", settle_seconds=0, pattern="*.csv",
        encoding="utf-8", delimiter=delimiter, header=True, mode="upsert", identity=IDENTITY,
        columns={"email": "email"},
    )  # fmt: skip


def _csv_rows(
    path: Path, db: DatabaseSettings, zone: ZoneInfo, at: str, decoded: bool, rules: RowRules
) -> Iterator[RowChunk]:
    if not decoded:
        precheck(path, "utf-8")
    schema = csv_schema(db, sniff_delimiter(path))
    source = DelimitedFile(path, "utf-8", schema.delimiter, header=True, max_columns=MAX_COLUMNS)
    # A CSV row carries no properties: with required ones declared, every row misses them.
    _, missing = check_declared_properties(rules.declared, {}, "/properties", zone, owner=rules.owner)
    try:
        plan = plan_columns(schema, db, source.header, len(source.header or []))
        for batch in source.batches(CHUNK_ROWS):
            commands, bad = convert_recipients(batch.rows, batch.lines, plan, schema, zone, at)
            refused = {line for line, _ in bad}
            good = [line for line in batch.lines if line not in refused]
            if missing:
                bad, good = bad + [(line, _reason(missing)) for line in good], []
            rejected = [RowError(line=line, reason=reason) for line, reason in sorted(batch.rejected + bad)]
            chunk = RowChunk(rejected=rejected, ignored=plan.ignored)
            upserts = [c for c in commands if isinstance(c, UpsertRecipient)]
            for upsert, line in zip(upserts if good else [], good, strict=True):
                chunk.add(upsert, {}, RowError(reason="", line=line))
            yield chunk
    finally:
        source.close()


def _reason(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.path}: {e.message}" for e in errors)


# -- JSON: one object per row --------------------------------------------------------------------


def parse_row(
    db: DatabaseSettings, item: Any, at: str, zone: ZoneInfo, path: str, rules: RowRules = RowRules()
) -> tuple[UpsertRecipient | None, dict[str, Any], str | None]:
    """(upsert, properties, None) for a good row, (None, {}, reason) for a bad one.

    The limits are SPEC §3's (streamapp.core.validation): the row's message carries its properties and
    the attributes it writes, in one Kafka record and later in the ledger, so together they are bounded.
    Declared properties (`rules`) are typed as declared: a date property is sent as its ISO text.
    """
    if not isinstance(item, dict):
        return None, {}, "must be a JSON object"
    fields = dict(item)
    properties = fields.pop("properties", {})
    upsert, errors = parse_recipient(db, fields, at=at, zone=zone, path=path, allow_status=False)
    errors += check_properties(properties, f"{path}/properties")
    if isinstance(properties, dict):
        where = f"{path}/properties"
        properties, declared_errors = check_declared_properties(
            rules.declared, properties, where, zone, owner=rules.owner
        )
        errors += declared_errors
    if not errors and upsert is not None and upsert.attributes:
        values = {"properties": properties, "attributes": upsert.attributes}
        errors = check_size(values, f"{path}/properties", "the properties and attributes")
    if errors or upsert is None:
        return None, {}, _reason(errors)
    return upsert, properties, None


def _ndjson_rows(path: Path, db: DatabaseSettings, zone: ZoneInfo, at: str, rules: RowRules) -> Iterator[RowChunk]:
    chunk = RowChunk()
    with path.open("rb") as f:
        for number, line in enumerate(_bounded_lines(f), start=1):
            if line is None:
                chunk.rejected.append(RowError(line=number, reason=f"a line longer than {MAX_LINE:,} bytes"))
            elif line.strip():
                _add_json(chunk, line, number, db, zone, at, rules)
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = RowChunk()
    if len(chunk):
        yield chunk


def _add_json(
    chunk: RowChunk, line: bytes, number: int, db: DatabaseSettings, zone: ZoneInfo, at: str, rules: RowRules
) -> None:
    try:
        item = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        chunk.rejected.append(RowError(line=number, reason=f"malformed JSON: {exc}"))
    else:
        _add(chunk, parse_row(db, item, at, zone, "", rules), RowError(line=number, reason=""))


def _bounded_lines(f: BinaryIO, limit: int = MAX_LINE) -> Iterator[bytes | None]:
    """Each line of `f`, or None for one longer than `limit` bytes (its rest skipped in bounded reads)."""
    while line := f.readline(limit + 1):
        if len(line) <= limit:
            yield line
            continue
        while not line.endswith(b"\n") and (line := f.readline(limit)):
            pass
        yield None


def _json_array_rows(path: Path, db: DatabaseSettings, zone: ZoneInfo, at: str, rules: RowRules) -> Iterator[RowChunk]:
    with path.open("rb") as raw:
        start = raw.read(4096).lstrip()
        if not start.startswith(b"["):
            raise FileRejected("the body must be a JSON array, NDJSON (application/x-ndjson) or CSV (text/csv)")
        raw.seek(0)
        f = _ItemBound(raw, MAX_LINE)
        chunk = RowChunk()
        index = -1
        try:
            for index, item in enumerate(array_items(f, f.item_done)):
                _add(chunk, parse_row(db, item, at, zone, f"/{index}", rules), RowError(item=index, reason=""))
                if len(chunk) >= CHUNK_ROWS:
                    yield chunk
                    chunk = RowChunk()
        except (ijson.JSONError, NestedTooDeep, ItemTooLarge, UnicodeDecodeError) as exc:
            yield chunk
            first = str(exc).strip().splitlines()[0]  # yajl adds a picture of the place on more lines
            problem = first if isinstance(exc, NestedTooDeep | ItemTooLarge) else f"malformed JSON ({first})"
            if isinstance(exc, UnicodeDecodeError):
                problem = f"not valid UTF-8 ({exc.reason})"
            raise FileRejected(f"item {index + 1} (counting from 0): {problem}") from None
    if len(chunk):
        yield chunk


class ItemTooLarge(ValueError):
    pass


class _ItemBound:
    """A binary file for ijson that refuses to read on once the current item passed `limit` bytes.

    ijson reads in buffers and builds a string token whole, so the bound has to be on the reads: the
    item being parsed began at or after the last item boundary (`item_done`), and a read that would
    take it past `limit` bytes (plus one buffer, the granularity of the count) raises ItemTooLarge.
    """

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self.f = f
        self.limit = limit
        self.position = 0
        self.boundary = 0
        self.slack = 0

    def read(self, size: int = -1) -> bytes:
        self.slack = max(self.slack, size)
        if self.position - self.boundary > self.limit + self.slack:
            raise ItemTooLarge(f"an item of more than {self.limit:,} bytes")
        data = self.f.read(size)
        self.position += len(data)
        return data

    def item_done(self) -> None:
        self.boundary = self.position


class NestedTooDeep(ValueError):
    pass


def array_items(f: BinaryIO | _ItemBound, item_done: Callable[[], None] = lambda: None) -> Iterator[Any]:
    """The items of a top-level JSON array, one at a time, each nested at most MAX_DEPTH deep;
    `item_done` is called after each item is complete.

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
            item_done()
            yield builder.value
            builder = ObjectBuilder()


def _add(chunk: RowChunk, parsed: tuple[UpsertRecipient | None, dict[str, Any], str | None], where: RowError) -> None:
    upsert, properties, reason = parsed
    if upsert is None:
        where.reason = reason or "invalid row"
        chunk.rejected.append(where)
    else:
        chunk.add(upsert, properties, where)
