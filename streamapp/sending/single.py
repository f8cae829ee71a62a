"""One transactional message (`POST /api/v1/triggers/{trigger}/messages`, SPEC §4): body and commands.

Body: `{originalId, email?, properties?, saveProps?, deliveryTime?, idempotencyKey?}`. It
becomes an upsert that creates an unknown recipient from `originalId` and `email` (an existing
one keeps its address; the message goes to the one given) and, with `saveProps`, stores the
properties named like the database's attributes (all of them with `auto_create_attributes`);
and a SendMessage at transactional priority that carries those values, so they render even
before the upsert is applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from streamapp.core import clock
from streamapp.core.ids import message_id_for
from streamapp.core.models import SendMessage, UpsertRecipient
from streamapp.core.validation import (
    FieldError,
    InvalidInput,
    check_attributes,
    check_declared_properties,
    check_email,
    check_original_id,
    check_properties,
    check_size,
    parse_datetime,
    send_time_problem,
)
from streamapp.settings import DatabaseSettings, TriggerSettings

FIELDS = frozenset({"originalId", "email", "properties", "saveProps", "deliveryTime", "idempotencyKey"})
MAX_KEY = 256


@dataclass(frozen=True)
class SingleRequest:
    original_id: str
    email: str | None
    properties: dict[str, Any]
    saved: dict[str, Any]  # properties stored as attributes (saveProps)
    delivery_time: datetime | None
    idempotency_key: str | None
    #: SHA-256 of the body without its key, keys sorted: "the same body" of an idempotent retry.
    body_hash: str = field(default="")


def parse_single(
    body: Any, db: DatabaseSettings, zone: ZoneInfo, header_key: str | None, trigger: TriggerSettings | None = None
) -> SingleRequest:
    """Validate the body (the properties against what `trigger` declares); 422 listing every bad field."""
    if not isinstance(body, dict):
        raise InvalidInput([FieldError("/", "must be a JSON object")])
    errors = [FieldError(f"/{k}", "unknown field") for k in body if k not in FIELDS]
    if "originalId" not in body:
        errors.append(FieldError("/originalId", "is required"))
    errors += check_original_id(body.get("originalId"), "/originalId")
    errors += check_email(body.get("email"), "/email")
    properties, saved, value_errors = _values(body, db, zone)
    errors += value_errors
    if trigger is not None and not value_errors:
        owner = f"trigger {trigger.name!r}"
        properties, declared_errors = check_declared_properties(
            trigger.properties, properties, "/properties", zone, owner=owner
        )
        errors += declared_errors
    delivery = None
    if body.get("deliveryTime") is not None:
        delivery = parse_datetime(body["deliveryTime"], zone)
        if delivery is None:
            errors.append(FieldError("/deliveryTime", "must be an ISO 8601 date-time (e.g. 2026-12-01T08:00:00+01:00)"))
        elif problem := send_time_problem(delivery, datetime.now(UTC)):
            errors.append(FieldError("/deliveryTime", problem))
    key, key_errors = _idempotency_key(body.get("idempotencyKey"), header_key)
    errors += key_errors
    if errors:
        raise InvalidInput(errors)
    without_key = {k: v for k, v in body.items() if k != "idempotencyKey"}
    digest = hashlib.sha256(msgspec.json.encode(without_key, order="sorted")).hexdigest()
    return SingleRequest(body["originalId"], body.get("email"), properties, saved, delivery, key, digest)


def _values(
    body: dict[str, Any], db: DatabaseSettings, zone: ZoneInfo
) -> tuple[dict[str, Any], dict[str, Any], list[FieldError]]:
    """(properties, saved, errors): the template's properties and, with saveProps, the attributes they set.

    Both travel in the SendMessage (one Kafka record, then the ledger row while the message waits), so
    besides their own limits (streamapp.core.validation) they are bounded together.
    """
    properties = body.get("properties", {})
    errors = check_properties(properties, "/properties")
    if not isinstance(properties, dict):
        properties = {}
    save = body.get("saveProps", False)
    if not isinstance(save, bool):
        errors.append(FieldError("/saveProps", "must be true or false"))
    saved: dict[str, Any] = {}
    if save is True:
        matching = {k: v for k, v in properties.items() if k in db.attributes or db.auto_create_attributes}
        saved, attribute_errors = check_attributes(db, matching, "/properties", zone)
        errors += attribute_errors
    if not errors and saved:
        errors = check_size({"properties": properties, "attributes": saved}, "/properties", "the properties")
    return properties, saved, errors


def _idempotency_key(in_body: Any, in_header: str | None) -> tuple[str | None, list[FieldError]]:
    if in_body is not None and (not isinstance(in_body, str) or not 0 < len(in_body) <= MAX_KEY):
        return None, [FieldError("/idempotencyKey", f"must be a string of 1 to {MAX_KEY} characters")]
    if in_header is not None and not 0 < len(in_header) <= MAX_KEY:
        return None, [FieldError("/header/Idempotency-Key", f"must be 1 to {MAX_KEY} characters")]
    if in_body is not None and in_header is not None and in_body != in_header:
        return None, [FieldError("/idempotencyKey", "differs from the Idempotency-Key header")]
    return in_body if in_body is not None else in_header, []


def build_commands(
    request: SingleRequest,
    trigger: TriggerSettings,
    partitions: int,
    at: str,
    id_key: bytes | None = None,
    message_id: str | None = None,
) -> tuple[UpsertRecipient, SendMessage]:
    """The recipient upsert and the message, with `message_id` or a new id (tagged with `id_key`,
    streamapp.core.ids)."""
    upsert = UpsertRecipient(
        database=trigger.database,
        originalId=request.original_id,
        at=at,
        emailIfNew=request.email,
        createOnly=not request.saved,
        attributes=dict(request.saved) if request.saved else msgspec.UNSET,
    )
    delivery = request.delivery_time.astimezone(UTC) if request.delivery_time else None
    later = delivery is not None and delivery > datetime.now(UTC)
    message = SendMessage(
        messageId=message_id or message_id_for(trigger.database, request.original_id, partitions, id_key),
        database=trigger.database,
        originalId=request.original_id,
        priority="transactional",
        template=trigger.template,
        name=trigger.name,
        transactional=trigger.transactional,
        properties=request.properties,
        email=request.email,
        attributes=dict(request.saved) or None,
        notBefore=clock.iso(delivery) if later and delivery else None,
        upserted=True,
        enqueuedAt=at,
    )
    return upsert, message
