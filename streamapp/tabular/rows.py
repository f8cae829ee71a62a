"""From rows of text to recipient commands: typed and validated per batch with polars.

Each check is a vectorized polars expression that yields a reason or null
per row; a row with any reason is rejected with all of them, every other row
becomes a command. Empty cells are "no value": they leave the attribute as it
is (a file cannot clear an attribute; the API can, with null).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

from streamapp.core.models import AppendHistory, HistoryRecord, RecipientCommand, UpsertRecipient
from streamapp.core.validation import (
    CONTROL_PATTERN,
    EMAIL_ASCII,
    MAX_ATTRIBUTES,
    MAX_ATTRIBUTES_BYTES,
    MAX_EMAIL,
    MAX_HISTORY_RECORD_BYTES,
    MAX_ORIGINAL_ID,
    MAX_STRING_BYTES,
    email_problem,
    encoded_size,
    parse_datetime,
    text_problem,
)
from streamapp.settings import AttributeType, DatabaseSettings, ImportSettings
from streamapp.tabular.csvreader import FileRejected

TRUE = ("true", "1", "yes", "y", "t", "ja", "j")
FALSE = ("false", "0", "no", "n", "f", "nej")
HISTORY_COLUMNS = ("originalId", "sku", "itemPrice", "time", "quantity", "total")
MAX_CUSTOM = 25  # custom2..custom26
HISTORY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Polars (Rust regex) form of an all-ASCII address: `$` there is the end of the text, never a newline.
_EMAIL_POLARS = f"^(?:{EMAIL_ASCII})$"
#: What one attribute may take stored beyond its text in the file: the name's and the value's MessagePack
#: headers (5 bytes each at most) and a typed value's growth (a float is 9 bytes, a date-time gains its
#: offset). With it, the row estimate of convert_recipients is never below the stored size.
_ATTRIBUTE_OVERHEAD = 16


@dataclass(frozen=True)
class Attribute:
    index: int
    column: str
    name: str
    kind: AttributeType


@dataclass(frozen=True)
class ColumnPlan:
    """Which file column feeds which recipient field."""

    identity: int
    identity_column: str
    email: int | None
    email_column: str | None
    attributes: tuple[Attribute, ...]
    ignored: tuple[str, ...]


def _position(name: str, header: list[str] | None, width: int) -> int | None:
    if header is not None:
        return header.index(name) if name in header else None
    if name.isdigit() and 1 <= int(name) <= width:
        return int(name) - 1
    return None


def plan_columns(imp: ImportSettings, db: DatabaseSettings, header: list[str] | None, width: int) -> ColumnPlan:
    """Map file columns to fields; a missing identity column rejects the file."""
    identity_name = imp.identity or next((c for c, t in imp.columns.items() if t == "originalId"), "")
    identity = _position(identity_name, header, width)
    if identity is None:
        found = ", ".join(map(repr, header)) if header is not None else f"{width} unnamed columns"
        raise FileRejected(f"identity column {identity_name!r} not found (the file has {found})")
    email = email_column = None
    attributes: list[Attribute] = []
    mapped = {identity_name}
    for column, target in imp.columns.items():
        index = _position(column, header, width)
        mapped.add(column)
        if index is None or target == "originalId":
            continue
        if target == "email":
            email, email_column = index, column
        else:
            attributes.append(Attribute(index, column, target, db.attributes.get(target, "string")))
    ignored: list[str] = []
    for index, column in enumerate(header or []):
        if column in mapped or not column:
            continue
        if db.auto_create_attributes or column in db.attributes:
            attributes.append(Attribute(index, column, column, db.attributes.get(column, "string")))
        else:
            ignored.append(column)
    _check_attribute_columns(attributes)
    return ColumnPlan(identity, identity_name, email, email_column, tuple(attributes), tuple(ignored))


def _check_attribute_columns(attributes: list[Attribute]) -> None:
    """SPEC §3 limits known from the header: every row would break them, so the file is refused whole."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise FileRejected(f"{len(attributes)} columns are attributes; a recipient has at most {MAX_ATTRIBUTES}")
    for attribute in attributes:
        problem = text_problem(attribute.name)
        if problem:
            raise FileRejected(f"column {attribute.column[:60]!r}: an attribute name that {problem}")


def _frame(rows: list[list[str]], indexes: list[int]) -> pl.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in indexes]
    data = {f"c{i}": columns[i] if rows else [] for i in indexes}
    return pl.DataFrame(data, schema=dict.fromkeys(data, pl.String)).with_columns(pl.all().str.strip_chars())


def _reason(condition: pl.Expr, message: pl.Expr | str) -> pl.Expr:
    text = pl.lit(message) if isinstance(message, str) else message
    return pl.when(condition).then(text).otherwise(None)


def _quoted(column: str) -> pl.Expr:
    return pl.lit("'") + pl.col(column).str.slice(0, 60) + pl.lit("'")


def _typed(attribute: Attribute, zone: ZoneInfo) -> tuple[pl.Expr, pl.Expr]:
    """(converted value, reason) expressions for one attribute column."""
    c = f"c{attribute.index}"
    value = pl.col(c)
    present = value.is_not_null() & (value != "")
    label = f"column {attribute.column!r}: "
    if attribute.kind == "int":
        out: pl.Expr = value.cast(pl.Int64, strict=False)
        what = "is not an integer"
    elif attribute.kind == "float":
        number = value.str.replace(",", ".", literal=True).cast(pl.Float64, strict=False)
        out = pl.when(number.is_finite()).then(number).otherwise(None)  # "nan", "inf", "1e999": not numbers
        what = "is not a number"
    elif attribute.kind == "bool":
        lowered = value.str.to_lowercase()
        out = pl.when(lowered.is_in(TRUE)).then(True).when(lowered.is_in(FALSE)).then(False).otherwise(None)
        what = "is not true/false"
    elif attribute.kind == "date":
        out = value.str.to_date("%Y-%m-%d", strict=False).dt.to_string("%Y-%m-%d")
        what = "is not a date (YYYY-MM-DD)"
    elif attribute.kind == "datetime":
        out = value.map_elements(lambda v: _iso_datetime(v, zone), return_dtype=pl.String)
        what = "is not a date-time (ISO 8601)"
    else:
        return value, _text_reason(value, label)
    reason = _reason(present & out.is_null(), pl.lit(label) + _quoted(c) + pl.lit(f" {what}"))
    return out, reason


def _text_reason(value: pl.Expr, label: str) -> pl.Expr:
    """A string attribute's cell: at most MAX_STRING_BYTES in UTF-8, no control characters (SPEC §3)."""
    return (
        pl.when(value.str.len_bytes() > MAX_STRING_BYTES)
        .then(pl.lit(label) + value.str.len_bytes().cast(pl.String) + pl.lit(f" bytes, more than {MAX_STRING_BYTES}"))
        .when(value.str.contains(CONTROL_PATTERN))
        .then(pl.lit(f"{label}contains control characters (tab and line breaks are allowed)"))
        .otherwise(None)
    )


def _row_size_reason(plan: ColumnPlan) -> pl.Expr:
    """A row whose attributes would take more than MAX_ATTRIBUTES_BYTES stored (an estimate never below it)."""
    sizes = [
        pl.when(pl.col(f"c{a.index}") != "")
        .then(pl.col(f"c{a.index}").str.len_bytes().cast(pl.Int64) + len(a.name.encode()) + _ATTRIBUTE_OVERHEAD)
        .otherwise(0)
        for a in plan.attributes
    ]
    total = pl.sum_horizontal(sizes) if sizes else pl.lit(0, dtype=pl.Int64)
    message = pl.lit("the attributes would take about ") + total.cast(pl.String)
    return _reason(total > MAX_ATTRIBUTES_BYTES, message + pl.lit(f" bytes stored, more than {MAX_ATTRIBUTES_BYTES}"))


def _email_reasons(frame: pl.DataFrame, index: int, column_name: str | None) -> pl.Series:
    """Per row, why the e-mail cell is not an address (or null): polars checks the plain ASCII ones, and
    streamapp.core.validation.email_problem, the one rule of every door, decides the few others (IDN, bad)."""
    column = frame.get_column(f"c{index}")
    plain = column.str.contains(_EMAIL_POLARS) & (column.str.len_bytes() <= MAX_EMAIL)
    suspects = ((column != "") & ~plain).fill_null(False)
    reasons: list[str | None] = [None] * len(column)
    for i in suspects.arg_true().to_list():
        value = column[i]
        problem = email_problem(value)
        if problem:
            reasons[i] = f"column {column_name!r}: {value[:60]!r} {problem}"
    return pl.Series("email_reason", reasons, dtype=pl.String)


def _iso_datetime(value: str, zone: ZoneInfo) -> str | None:
    parsed = parse_datetime(value, zone)
    return parsed.isoformat() if parsed else None


def convert_recipients(
    rows: list[list[str]],
    lines: list[int],
    plan: ColumnPlan,
    imp: ImportSettings,
    zone: ZoneInfo,
    at: str,
) -> tuple[list[RecipientCommand], list[tuple[int, str]]]:
    """Commands for the good rows; (line, reason) for the bad ones."""
    indexes = sorted(
        {plan.identity, *([plan.email] if plan.email is not None else []), *(a.index for a in plan.attributes)}
    )
    frame = _frame(rows, indexes)
    oid = f"c{plan.identity}"
    reasons = [
        _reason(pl.col(oid).is_null() | (pl.col(oid) == ""), f"empty identity (column {plan.identity_column!r})"),
        _reason(pl.col(oid).str.len_chars() > MAX_ORIGINAL_ID, f"identity longer than {MAX_ORIGINAL_ID} characters"),
        _reason(pl.col(oid).str.contains(r"[\x00-\x1f]"), "identity contains control characters"),
    ]
    outputs = [pl.col(oid).alias("originalId")]
    if plan.email is not None:
        frame = frame.with_columns(_email_reasons(frame, plan.email, plan.email_column))
        reasons.append(pl.col("email_reason"))
        email = pl.col(f"c{plan.email}")
        outputs.append(pl.when(email == "").then(None).otherwise(email).alias("email"))
    for n, attribute in enumerate(plan.attributes):
        value, reason = _typed(attribute, zone)
        outputs.append(pl.when(pl.col(f"c{attribute.index}") == "").then(None).otherwise(value).alias(f"a{n}"))
        reasons.append(reason)
    reasons.append(_row_size_reason(plan))
    result = frame.select(*outputs, pl.concat_str(reasons, separator="; ", ignore_nulls=True).alias("reason"))
    return _commands(result, lines, plan, imp, at)


def _commands(
    result: pl.DataFrame, lines: list[int], plan: ColumnPlan, imp: ImportSettings, at: str
) -> tuple[list[RecipientCommand], list[tuple[int, str]]]:
    reasons = result.get_column("reason").to_list()
    rejected = [(lines[i], r) for i, r in enumerate(reasons) if r]
    names = [a.name for a in plan.attributes]
    has_email = plan.email is not None
    first_attribute = 1 + has_email
    status: Any = "unsubscribed" if imp.mode == "unsubscribe" else msgspec.UNSET
    reactivate = imp.mode == "replace"
    database = imp.database
    unset = msgspec.UNSET
    commands: list[RecipientCommand] = []
    columns = [result.get_column(c).to_list() for c in result.columns if c != "reason"]
    for i, values in enumerate(zip(*columns, strict=True)):
        if reasons[i]:
            continue
        email = values[1] if has_email and values[1] is not None else unset
        attributes = {n: v for n, v in zip(names, values[first_attribute:], strict=True) if v is not None}
        commands.append(
            UpsertRecipient(
                database=database,
                originalId=values[0],
                at=at,
                email=email,
                attributes=attributes or unset,
                status=status,
                reactivate=reactivate,
            )
        )
    return commands, rejected


def convert_history(
    rows: list[list[str]], lines: list[int], imp: ImportSettings, zone: ZoneInfo, at: str, digest: str
) -> tuple[list[RecipientCommand], list[tuple[int, str]]]:
    """SPEC §5 history rows: originalId;sku;itemPrice;[time];[quantity];[total];[custom2..custom26]."""
    commands: list[RecipientCommand] = []
    rejected: list[tuple[int, str]] = []
    for line, row in zip(lines, rows, strict=True):
        record, problem = _history_record(row, line, imp, zone, at, digest)
        if problem:
            rejected.append((line, problem))
        elif record is not None:
            commands.append(AppendHistory(database=imp.database, originalId=row[0].strip(), records=[record]))
    return commands, rejected


def _history_record(
    row: list[str], line: int, imp: ImportSettings, zone: ZoneInfo, at: str, digest: str
) -> tuple[HistoryRecord | None, str | None]:
    cells = [c.strip() for c in row] + [""] * max(0, len(HISTORY_COLUMNS) - len(row))
    if len(row) < 3:
        return None, f"expected at least 3 fields (originalId;sku;itemPrice), found {len(row)}"
    if len(row) > len(HISTORY_COLUMNS) + MAX_CUSTOM:
        return None, f"expected at most {len(HISTORY_COLUMNS) + MAX_CUSTOM} fields, found {len(row)}"
    if not cells[0] or len(cells[0]) > MAX_ORIGINAL_ID:
        return None, "empty identity (field 1)" if not cells[0] else "identity longer than 256 characters"
    if any(ord(c) < 32 for c in cells[0]):
        return None, "identity contains control characters"
    problem = _history_text_problem(cells)
    if problem:
        return None, problem
    numbers: dict[str, float | None] = {}
    for name, index in (("price", 2), ("quantity", 4), ("total", 5)):
        numbers[name], bad = _number(cells[index])
        if bad:
            return None, f"field {index + 1} ({HISTORY_COLUMNS[index]}): {cells[index][:60]!r} is not a number"
    when = at
    if cells[3]:
        try:
            when = (
                datetime.strptime(cells[3], HISTORY_TIME_FORMAT)
                .replace(tzinfo=zone)
                .astimezone(ZoneInfo("UTC"))
                .isoformat()
            )
        except ValueError:
            return None, f"field 4 (time): {cells[3][:60]!r} is not yyyy-MM-dd HH:mm:ss"
    custom = {f"custom{n + 2}": v for n, v in enumerate(cells[6:]) if v}
    record = HistoryRecord(
        id=f"{digest[:16]}:{line}", type=imp.history_type, time=when, sku=cells[1] or None, fields=custom, **numbers
    )
    return record, _record_size_problem(record, cells)


def _history_text_problem(cells: list[str]) -> str | None:
    """The text fields of a history row (sku, custom2..custom26): SPEC §3 string values."""
    for index in (1, *range(len(HISTORY_COLUMNS), len(cells))):
        problem = text_problem(cells[index])
        if problem:
            name = HISTORY_COLUMNS[index] if index < len(HISTORY_COLUMNS) else f"custom{index - 4}"
            return f"field {index + 1} ({name}): {problem}"
    return None


def _record_size_problem(record: HistoryRecord, cells: list[str]) -> str | None:
    """A record larger than a history list may hold; encoded only when its text could make it so."""
    if 4 * sum(map(len, cells)) + 1024 <= MAX_HISTORY_RECORD_BYTES:
        return None  # UTF-8 takes at most 4 bytes a character, the rest of a record far less than 1 KiB
    size = encoded_size(record)
    if size is None or size > MAX_HISTORY_RECORD_BYTES:
        return f"the record takes {size} bytes stored, more than {MAX_HISTORY_RECORD_BYTES}"
    return None


def _number(text: str) -> tuple[float | None, bool]:
    if not text:
        return None, False
    try:
        value = float(text.replace(",", ".") if "." not in text else text)
    except ValueError:
        return None, True
    return (value, False) if math.isfinite(value) else (None, True)  # "nan", "inf", "1e999": not numbers
