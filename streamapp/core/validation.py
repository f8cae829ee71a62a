"""Checking recipient, history and message input against a database's schema and the limits of SPEC §3.

The same rules serve the API (422 details), batch bodies and file imports (per-row reasons, through
streamapp.tabular.rows): each check returns a list of FieldError naming the path of the bad value,
so one bad field never hides another. The limits are defined here once; the agent
(streamapp.recipients.apply) applies the row limit again to what merging makes, and the store
(streamapp.kafka.store) refuses anything the changelog could not take.
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from streamapp.core.models import STATUSES, AppendHistory, HistoryRecord, UpsertRecipient
from streamapp.settings import ENGAGEMENT_PREFIX, AttributeType, DatabaseSettings, DeclaredProperty

MAX_ORIGINAL_ID = 256

# -- limits (SPEC §3): the one place every door (API, files, batch bodies, saveProps) and the agent
# read them from. Stored values are MessagePack in RocksDB and on a compacted changelog, and Kafka
# takes at most 1 MiB per record: each bound keeps one client's value from making a row the changelog
# cannot take (which used to crash the worker on every restart).

#: A string value (attribute, property, history field), in UTF-8 bytes: what it costs stored.
MAX_STRING_BYTES = 64 * 1024
#: An e-mail address, in bytes: RFC 5321's 256-octet path minus the angle brackets.
MAX_EMAIL = 254
MAX_ATTRIBUTES = 256
#: Top-level keys of a message's `properties`.
MAX_PROPERTIES = 256
#: Deepest nesting of `properties` (objects and arrays); templates rarely need more than three.
MAX_DEPTH = 32
#: A stored recipient row, a stored history list, a send record (its properties and attributes).
MAX_RECORD_BYTES = 512 * 1024
#: Room kept in a row for what is not an attribute (originalId ≤ 1 KiB in UTF-8, e-mail, status, times),
#: so that the attributes one command may carry always make a row within MAX_RECORD_BYTES.
ROW_RESERVE = 4 * 1024
MAX_ATTRIBUTES_BYTES = MAX_RECORD_BYTES - ROW_RESERVE
#: A history list is a MessagePack array: its header takes at most 5 bytes, the rest is records.
MAX_HISTORY_RECORD_BYTES = MAX_RECORD_BYTES - 5
#: Integers travel as MessagePack and polars Int64: a wider one could not be encoded (a 500, not a 422).
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
CUSTOM_FIELDS = frozenset(f"custom{i}" for i in range(1, 27))

# -- bounded work per request (README "Limits"): what one batch body or send file may make a worker do.

#: Rows read from one batch body or send file (trigger batch, campaign send); the rest is not read, and
#: the batch's last error says so. Bounds the per-batch duplicate check (8 bytes a row) and the work.
MAX_BATCH_ROWS = 10_000_000
#: Columns of a CSV batch body or send file: every attribute, originalId, email and a few ignored ones.
#: More is refused whole (a 1 GiB line of `;` would be a billion fields).
MAX_COLUMNS = MAX_ATTRIBUTES + 2 + 14
#: A line of a CSV/TXT file or body (characters after decoding; a row spanning lines inside quotes,
#: all of its lines) or of an NDJSON body (bytes): checked while reading, so a longer one is never in
#: memory. A longer row is a rejected row; reading goes on at the next line.
MAX_LINE = 1 << 20
#: How far ahead `sendTime` and `deliveryTime` may be: a send cannot sit in the ledger for years.
MAX_SEND_AHEAD = timedelta(days=365)

#: Control characters refused in string values: C0 but TAB, LF and CR, and DEL. A value may reach a
#: Subject header through a template: rendering collapses whitespace (TAB, CR, LF included) to spaces,
#: but NUL and the other controls would pass into the header and the SMTP DATA. Multi-line text stays
#: allowed, for bodies. Written in ASCII escapes that polars' Rust regex reads as Python's `re` does.
CONTROL_PATTERN = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL = re.compile(CONTROL_PATTERN + "|[\ud800-\udfff]")  # lone surrogates cannot be stored as UTF-8

# E-mail addresses. The local part is RFC 5322's dot-atom text (printable ASCII without space and the
# specials "(),:;<>@[\]), loosely: dots anywhere, as providers accept them; the domain has RFC 1035
# labels (1 to 63 letters, digits and inner hyphens) and at least one dot, or is an IDN that the
# `idna` codec turns into one (the same codec streamapp.mail.mime sends it with). Explicit ASCII
# ranges and escaped punctuation: polars' Rust regex reads EMAIL_ASCII as Python's `re` does.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = _LABEL + r"(?:\." + _LABEL + r")+"
#: An all-ASCII address, unanchored (anchor it: `^(?:…)$` in polars, `fullmatch` in Python).
EMAIL_ASCII = _LOCAL + "@" + _DOMAIN
#: EMAIL_ASCII anchored at both ends (`\Z`, never `$`, which also matches before a final newline).
EMAIL_RE = re.compile(rf"(?:{EMAIL_ASCII})\Z")
_LOCAL_RE = re.compile(_LOCAL)
_DOMAIN_RE = re.compile(_DOMAIN)
#: Unicode categories refused anywhere in an address: controls, format characters (invisible, e.g. a
#: zero-width space the IDNA mapping would silently drop), separators.
_NOT_IN_ADDRESS = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
NOT_AN_ADDRESS = "is not a valid e-mail address"


@dataclass(frozen=True)
class FieldError:
    """A bad value: where it is (JSON-pointer-like path) and why."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class InvalidInput(Exception):
    """Domain code refuses input: every bad field with its path (the HTTP layer answers 422)."""

    def __init__(self, errors: list[FieldError], message: str = "invalid body") -> None:
        super().__init__(message)
        self.errors = errors
        self.message = message


def send_time_problem(when: datetime, now: datetime) -> str | None:
    """None for a send time within MAX_SEND_AHEAD of `now` (a past one means now); else why not."""
    if when - now > MAX_SEND_AHEAD:
        return f"must be at most {MAX_SEND_AHEAD.days} days ahead (not after {(now + MAX_SEND_AHEAD).date()})"
    return None


def check_original_id(value: Any, path: str) -> list[FieldError]:
    if not isinstance(value, str):
        return [FieldError(path, "must be a string")]
    if not value.strip():
        return [FieldError(path, "must not be empty")]
    if len(value) > MAX_ORIGINAL_ID:
        return [FieldError(path, f"must be at most {MAX_ORIGINAL_ID} characters")]
    if any(ord(c) < 32 for c in value):
        return [FieldError(path, "must not contain control characters")]
    return []


def email_problem(value: str) -> str | None:
    """None for an address streamapp can send to; else why not, as a phrase after the quoted value.

    Stored as given: an IDN domain is only encoded to check it (streamapp.mail.mime encodes it again
    for the envelope and the To header).
    """
    if len(value) > MAX_EMAIL:  # characters: never fewer bytes; and nothing long is scanned below
        return f"{NOT_AN_ADDRESS} (longer than {MAX_EMAIL} bytes)"
    if EMAIL_RE.match(value):
        return None  # the common case: plain ASCII, nothing else to look at
    if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in value) or (
        not value.isascii() and any(unicodedata.category(c) in _NOT_IN_ADDRESS for c in value)
    ):
        return f"{NOT_AN_ADDRESS} (it contains a space or a control character)"
    if len(value.encode("utf-8")) > MAX_EMAIL:
        return f"{NOT_AN_ADDRESS} (longer than {MAX_EMAIL} bytes)"
    local, _, domain = value.rpartition("@")
    if not local.isascii():
        return f"{NOT_AN_ADDRESS} (the part before the @ must be ASCII: SMTPUTF8 is not supported)"
    if not _LOCAL_RE.fullmatch(local) or domain.isascii():
        return NOT_AN_ADDRESS  # the local part, or an ASCII domain EMAIL_RE refused
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return f"{NOT_AN_ADDRESS} (invalid international domain)"
    if not _DOMAIN_RE.fullmatch(ascii_domain):
        return f"{NOT_AN_ADDRESS} (invalid international domain)"
    if len(local) + 1 + len(ascii_domain) > MAX_EMAIL:
        return f"{NOT_AN_ADDRESS} (longer than {MAX_EMAIL} bytes with its domain encoded)"
    return None


def check_email(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, str):
        return [FieldError(path, "must be a string or null")]
    problem = email_problem(value)
    return [FieldError(path, f"{value[:80]!r} {problem}")] if problem else []


def text_problem(value: str) -> str | None:
    """None for a string value that may be stored; else why not (SPEC §3: ≤ 64 KiB, no control characters)."""
    if len(value) > MAX_STRING_BYTES // 4 and (  # 4 bytes a character at most: most values are not encoded
        len(value) > MAX_STRING_BYTES or len(value.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES
    ):
        return f"must be at most {MAX_STRING_BYTES} bytes in UTF-8"
    if _CONTROL.search(value):
        return "must not contain control characters (tab and line breaks are allowed)"
    return None


def check_text(value: Any, path: str) -> list[FieldError]:
    """A string value (a history field, a property): a string within the limits of text_problem."""
    if not isinstance(value, str):
        return [FieldError(path, "must be a string")]
    problem = text_problem(value)
    return [FieldError(path, problem)] if problem else []


def encoded_size(value: Any) -> int | None:
    """Bytes `value` takes stored (MessagePack), None if it cannot be stored at all."""
    try:
        return len(msgspec.msgpack.encode(value))
    except (OverflowError, TypeError, UnicodeEncodeError, ValueError):
        return None


def check_size(value: Any, path: str, what: str, limit: int = MAX_RECORD_BYTES) -> list[FieldError]:
    """The record size of SPEC §3, checked where it is known: at the door, before anything is published."""
    size = encoded_size(value)
    if size is None:
        return [FieldError(path, f"{what} cannot be stored (a value out of range)")]
    if size > limit:
        return [FieldError(path, f"{what} would take {size} bytes stored, more than the {limit} allowed")]
    return []


def finite_number(value: Any) -> bool:
    """A JSON number that is a finite float (an integer beyond a float's range is not: OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


#: Errors listed for one `properties` value: enough to fix a body, never a list as long as the body.
MAX_LISTED = 100


def check_properties(value: Any, path: str) -> list[FieldError]:
    """A message's template `properties` (SPEC §2, §3): an object of at most MAX_PROPERTIES keys, nested
    at most MAX_DEPTH deep, every string (name or value) within text_problem, every integer within
    MessagePack's range, and at most MAX_RECORD_BYTES stored (the message and its ledger row carry them)."""
    if not isinstance(value, dict):
        return [FieldError(path, "must be an object")]
    if len(value) > MAX_PROPERTIES:
        return [FieldError(path, f"at most {MAX_PROPERTIES} properties, not {len(value)}")]
    if nesting_depth(value) > MAX_DEPTH:
        return [FieldError(path, f"nested deeper than {MAX_DEPTH} levels")]
    errors = list(islice(_json_value_errors(value, path), MAX_LISTED))
    return errors or check_size(value, path, "the properties")


def nesting_depth(value: Any) -> int:
    """How deep objects and arrays nest in `value` (iterative: safe on any depth)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (current.values() if isinstance(current, dict) else current))
    return deepest


def _json_value_errors(value: Any, path: str) -> Iterator[FieldError]:
    """The bad leaves of a decoded JSON value, in document order (iterative)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, dict):
            for name in current:
                if problem := text_problem(str(name)):
                    yield FieldError(f"{where}/{str(name)[:80]}", f"the name {problem}")
            stack.extend(reversed([(child, f"{where}/{name}") for name, child in current.items()]))
        elif isinstance(current, list):
            stack.extend(reversed([(child, f"{where}/{i}") for i, child in enumerate(current)]))
        elif problem := _scalar_problem(current):
            yield FieldError(where, problem)


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, int):
        return None if MIN_INT <= value <= MAX_INT else "must be an integer between -2^63 and 2^63-1"
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    return "must be a JSON value"


def check_declared_properties(
    declared: Mapping[str, DeclaredProperty] | None,
    properties: Any,
    path: str,
    zone: ZoneInfo,
    *,
    owner: str = "its trigger or campaign",
) -> tuple[dict[str, Any], list[FieldError]]:
    """A send's `properties` against what its trigger or campaign declares (SPEC §2): every required one
    present and not null, each of its declared type (coerced as attributes are: dates become ISO text),
    none undeclared. `owner` names the declarer in reasons, e.g. "trigger 'welcome'". `declared` None
    means nothing is declared: the properties pass unchanged (check_properties bounds them anyway).
    Run it after check_properties, which refuses a non-object; here a missing value is `{}`."""
    given: dict[str, Any] = properties if isinstance(properties, dict) else {}
    if declared is None:
        return dict(given), []
    coerced: dict[str, Any] = {}
    errors = [
        FieldError(f"{path}/{str(name)[:80]}", f"not declared by {owner}") for name in given if name not in declared
    ]
    for name, spec in declared.items():
        value = given.get(name)
        if value is None:
            if spec.required:
                errors.append(FieldError(f"{path}/{name}", f"is required by {owner} ({spec.type})"))
            continue
        value, problem = coerce_attribute(spec.type, value, zone)
        if problem:
            errors.append(FieldError(f"{path}/{name}", f"{problem} (declared {spec.type} by {owner})"))
        else:
            coerced[name] = value
    return coerced, errors


def coerce_attribute(kind: AttributeType, value: Any, zone: ZoneInfo) -> tuple[Any, str | None]:
    """Return (stored value, None) or (None, reason). null clears an attribute."""
    if value is None:
        return None, None
    if kind == "string":
        if not isinstance(value, str):
            return None, "must be a string"
        return (None, problem) if (problem := text_problem(value)) else (value, None)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, "must be an integer"
        return (value, None) if MIN_INT <= value <= MAX_INT else (None, "must be an integer between -2^63 and 2^63-1")
    if kind == "float":
        return (float(value), None) if finite_number(value) else (None, "must be a number")
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, "must be true or false")
    if kind == "date":
        return _coerce_date(value)
    return _coerce_datetime(value, zone)


def _coerce_date(value: Any) -> tuple[Any, str | None]:
    try:
        return date.fromisoformat(value).isoformat(), None
    except (TypeError, ValueError):
        return None, "must be an ISO 8601 date (YYYY-MM-DD)"


def _coerce_datetime(value: Any, zone: ZoneInfo) -> tuple[Any, str | None]:
    parsed = parse_datetime(value, zone)
    if parsed is None:
        return None, "must be an ISO 8601 date-time (e.g. 2026-11-27T08:00:00+01:00)"
    return parsed.isoformat(), None


def parse_datetime(value: Any, zone: ZoneInfo) -> datetime | None:
    """ISO 8601; a time without an offset is in the service's time zone."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def check_attributes(
    db: DatabaseSettings, value: Any, path: str, zone: ZoneInfo
) -> tuple[dict[str, Any], list[FieldError]]:
    """Typed attributes of one command: at most MAX_ATTRIBUTES, strings within text_problem, and at most
    MAX_ATTRIBUTES_BYTES stored, so the row a new recipient gets from them stays within MAX_RECORD_BYTES."""
    if not isinstance(value, dict):
        return {}, [FieldError(path, "must be an object")]
    if len(value) > MAX_ATTRIBUTES:
        return {}, [FieldError(path, f"at most {MAX_ATTRIBUTES} attributes, not {len(value)}")]
    result: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, raw in value.items():
        kind = db.attributes.get(name)
        if kind is None and not db.auto_create_attributes:
            errors.append(FieldError(f"{path}/{name}", f"unknown attribute of database {db.name!r}"))
            continue
        coerced, problem = coerce_attribute(kind, raw, zone) if kind else _auto_attribute(name, raw)
        if problem:
            errors.append(FieldError(f"{path}/{name}", problem))
        else:
            result[name] = coerced
    if not errors:
        errors = check_size(result, path, "the attributes", MAX_ATTRIBUTES_BYTES)
    return result, errors


def _auto_attribute(name: str, value: Any) -> tuple[Any, str | None]:
    """An auto-created attribute: its name is stored with every value, so it is a bounded text too."""
    problem = text_problem(name)
    return (None, f"the name {problem}") if problem else _auto_string(value)


def _auto_string(value: Any) -> tuple[Any, str | None]:
    """An auto-created attribute is a string; JSON scalars are stored as their text."""
    if value is None:
        return value, None
    if isinstance(value, str):
        return (None, problem) if (problem := text_problem(value)) else (value, None)
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        return None, "must be an integer between -2^63 and 2^63-1"  # str() of a huge one is refused too
    if isinstance(value, int | float):
        return str(value), None
    return None, "must be a string"


def parse_recipient(
    db: DatabaseSettings,
    body: Any,
    *,
    at: str,
    zone: ZoneInfo,
    path: str = "",
    original_id: str | None = None,
    allow_status: bool = True,
) -> tuple[UpsertRecipient | None, list[FieldError]]:
    """Validate one upsert body; originalId comes from the URL when given."""
    if not isinstance(body, dict):
        return None, [FieldError(path or "/", "must be a JSON object")]
    allowed = {"email", "attributes"} | ({"status"} if allow_status else set())
    if original_id is None:
        allowed.add("originalId")
    errors = [FieldError(f"{path}/{k}", "unknown field") for k in body if k not in allowed]
    if original_id is None:
        if "originalId" not in body:
            errors.append(FieldError(f"{path}/originalId", "is required"))
        original_id = body.get("originalId")
    errors += check_original_id(original_id, f"{path}/originalId")
    fields: dict[str, Any] = {}
    if "email" in body:
        errors += check_email(body["email"], f"{path}/email")
        fields["email"] = body["email"]
    if "attributes" in body:
        fields["attributes"], attr_errors = check_attributes(db, body["attributes"], f"{path}/attributes", zone)
        errors += attr_errors
    if "status" in body:
        if body["status"] not in STATUSES:
            errors.append(FieldError(f"{path}/status", f"must be one of {', '.join(STATUSES)}"))
        fields["status"] = body["status"]
    if errors:
        return None, errors
    return UpsertRecipient(database=db.name, originalId=str(original_id), at=at, **fields), []


_HISTORY_FIELDS = {"originalId", "type", "time", "sku", "price", "quantity", "total", "fields"}


def parse_history(
    db: DatabaseSettings,
    body: Any,
    *,
    types: tuple[str, ...],
    at: str,
    zone: ZoneInfo,
    path: str = "",
) -> tuple[AppendHistory | None, list[FieldError]]:
    """Validate one history record body (it names its recipient)."""
    if not isinstance(body, dict):
        return None, [FieldError(path or "/", "must be a JSON object")]
    errors = [FieldError(f"{path}/{k}", "unknown field") for k in body if k not in _HISTORY_FIELDS]
    errors += check_original_id(body.get("originalId"), f"{path}/originalId")
    kind = body.get("type", "purchase")
    if problem := history_type_problem(kind, types):
        errors.append(FieldError(f"{path}/type", problem))
    when = at
    if "time" in body:
        parsed = parse_datetime(body["time"], zone)
        if parsed is None:
            errors.append(FieldError(f"{path}/time", "must be an ISO 8601 date-time"))
        else:
            when = parsed.astimezone(UTC).isoformat()
    numbers: dict[str, float | None] = {}
    for name in ("price", "quantity", "total"):
        value = body.get(name)
        if value is not None and not finite_number(value):
            errors.append(FieldError(f"{path}/{name}", "must be a number"))
        numbers[name] = value
    sku = body.get("sku")
    if sku is not None:
        errors += check_text(sku, f"{path}/sku")
    custom = body.get("fields", {})
    errors += _check_custom_fields(custom, f"{path}/fields")
    if errors:
        return None, errors
    record = HistoryRecord(id=uuid.uuid4().hex, type=kind, time=when, sku=sku, fields=dict(custom), **numbers)
    errors = check_size(record, path or "/", "the history record", MAX_HISTORY_RECORD_BYTES)
    if errors:
        return None, errors
    return AppendHistory(database=db.name, originalId=body["originalId"], records=[record]), []


def history_type_problem(kind: Any, types: tuple[str, ...]) -> str | None:
    """None for a type a client may post (a configured one); else why not. The `mail.*` engagement
    types are streamapp's own (SPEC §8): they are refused as such, not as unknown."""
    if isinstance(kind, str) and kind.startswith(ENGAGEMENT_PREFIX):
        return f"{kind[:80]!r} is reserved: streamapp records the {ENGAGEMENT_PREFIX}* engagement types itself"
    if kind in types:
        return None
    return f"unknown history type (configured: {', '.join(types)})"


def _check_custom_fields(custom: Any, path: str) -> list[FieldError]:
    if not isinstance(custom, dict):
        return [FieldError(path, "must be an object of custom1..custom26")]
    errors = []
    for name, value in custom.items():
        if name not in CUSTOM_FIELDS:
            errors.append(FieldError(f"{path}/{name}", "only custom1..custom26 are allowed"))
        else:
            errors += check_text(value, f"{path}/{name}")
    return errors


def to_builtins(value: Any) -> Any:
    """JSON-ready form of a struct (UNSET fields dropped)."""
    return msgspec.to_builtins(value)
