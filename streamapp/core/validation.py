"""Checking recipient and history input against a database's schema.

The same rules serve the API (422 details) and, later, file imports (per-row
reasons): each check returns a list of FieldError naming the path of the bad
value, so one bad field never hides another.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from streamapp.core.models import STATUSES, AppendHistory, HistoryRecord, UpsertRecipient
from streamapp.settings import AttributeType, DatabaseSettings

MAX_ORIGINAL_ID = 256
MAX_EMAIL = 254
CUSTOM_FIELDS = frozenset(f"custom{i}" for i in range(1, 27))
# Deliberately simple: one @, no spaces, a dot in the domain; deliverability is
# the SMTP server's call, this only catches what cannot be an address.
EMAIL_RE = re.compile(
    r"^[^@\s\"<>(),;:]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


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


def check_email(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, str):
        return [FieldError(path, "must be a string or null")]
    if len(value) > MAX_EMAIL or not EMAIL_RE.match(value):
        return [FieldError(path, f"{value[:80]!r} is not a valid e-mail address")]
    return []


def coerce_attribute(kind: AttributeType, value: Any, zone: ZoneInfo) -> tuple[Any, str | None]:
    """Return (stored value, None) or (None, reason). null clears an attribute."""
    if value is None:
        return None, None
    if kind == "string":
        return (value, None) if isinstance(value, str) else (None, "must be a string")
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, None) if ok else (None, "must be an integer")
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return (float(value), None) if ok else (None, "must be a number")
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
    if not isinstance(value, dict):
        return {}, [FieldError(path, "must be an object")]
    result: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, raw in value.items():
        kind = db.attributes.get(name)
        if kind is None and not db.auto_create_attributes:
            errors.append(FieldError(f"{path}/{name}", f"unknown attribute of database {db.name!r}"))
            continue
        coerced, problem = coerce_attribute(kind, raw, zone) if kind else _auto_string(raw)
        if problem:
            errors.append(FieldError(f"{path}/{name}", problem))
        else:
            result[name] = coerced
    return result, errors


def _auto_string(value: Any) -> tuple[Any, str | None]:
    """An auto-created attribute is a string; JSON scalars are stored as their text."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
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
    if kind not in types:
        errors.append(FieldError(f"{path}/type", f"unknown history type (configured: {', '.join(types)})"))
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
        ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))
        if not ok:
            errors.append(FieldError(f"{path}/{name}", "must be a number"))
        numbers[name] = value
    sku = body.get("sku")
    if sku is not None and not isinstance(sku, str):
        errors.append(FieldError(f"{path}/sku", "must be a string"))
    custom = body.get("fields", {})
    errors += _check_custom_fields(custom, f"{path}/fields")
    if errors:
        return None, errors
    record = HistoryRecord(id=uuid.uuid4().hex, type=kind, time=when, sku=sku, fields=dict(custom), **numbers)
    return AppendHistory(database=db.name, originalId=body["originalId"], records=[record]), []


def _check_custom_fields(custom: Any, path: str) -> list[FieldError]:
    if not isinstance(custom, dict):
        return [FieldError(path, "must be an object of custom1..custom26")]
    errors = []
    for name, value in custom.items():
        if name not in CUSTOM_FIELDS:
            errors.append(FieldError(f"{path}/{name}", "only custom1..custom26 are allowed"))
        elif not isinstance(value, str):
            errors.append(FieldError(f"{path}/{name}", "must be a string"))
    return errors


def to_builtins(value: Any) -> Any:
    """JSON-ready form of a struct (UNSET fields dropped)."""
    return msgspec.to_builtins(value)
