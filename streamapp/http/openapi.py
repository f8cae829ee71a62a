"""OpenAPI 3.1 description of every route the worker serves.

Built from the settings so the attribute types of each configured database
appear in the schema clients generate code from.
"""

from __future__ import annotations

from typing import Any

from streamapp import __version__
from streamapp.settings import Settings

JSON = "application/json"
NDJSON = "application/x-ndjson"

_ATTRIBUTE_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": ["string", "null"]},
    "int": {"type": ["integer", "null"]},
    "float": {"type": ["number", "null"]},
    "bool": {"type": ["boolean", "null"]},
    "date": {"type": ["string", "null"], "format": "date"},
    "datetime": {"type": ["string", "null"], "format": "date-time"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        401: "Missing or unknown bearer token",
        403: "Token lacks the scope or the database",
        404: "Unknown database, or no such recipient",
        413: "Body over the size limit, or over 10,000 items",
        422: "Invalid body or parameter; `details` names each bad field",
        503: "Worker starting or rebalancing; retry (see Retry-After)",
    }
    return {str(code): _error(texts[code]) for code in codes}


def _op(summary: str, scope: str | None, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    op["security"] = [{"bearer": [scope]}] if scope else []
    if scope:
        op["x-scope"] = scope
    return op


def _accepted(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "Accepted: acknowledged by Kafka, applied asynchronously",
        "content": {JSON: {"schema": schema}},
    }


def _batch_body(item: str) -> dict[str, Any]:
    array = {"type": "array", "maxItems": 10_000, "items": _ref(item)}
    return {
        "required": True,
        "content": {JSON: {"schema": array}, NDJSON: {"schema": _ref(item), "description": "one JSON object per line"}},
    }


def _schemas(settings: Settings) -> dict[str, Any]:
    attributes = {
        name: {
            "type": "object",
            "properties": {k: _ATTRIBUTE_SCHEMAS[v] for k, v in db.attributes.items()},
            "additionalProperties": db.auto_create_attributes,
        }
        for name, db in settings.databases.items()
    }
    original_id = {"type": "string", "minLength": 1, "maxLength": 256}
    status = {"type": "string", "enum": ["active", "inactive", "unsubscribed", "bounced"]}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        },
        "Attributes": {
            "description": "Typed by the database schema; null clears one",
            "oneOf": list(attributes.values()) or [{"type": "object"}],
        },
        "RecipientUpdate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "email": {"type": ["string", "null"], "format": "email"},
                "attributes": _ref("Attributes"),
                "status": status,
            },
        },
        "RecipientBatchItem": {
            "type": "object",
            "additionalProperties": False,
            "required": ["originalId"],
            "properties": {
                "originalId": original_id,
                "email": {"type": ["string", "null"], "format": "email"},
                "attributes": _ref("Attributes"),
            },
        },
        "Recipient": {
            "type": "object",
            "properties": {
                "originalId": original_id,
                "email": {"type": ["string", "null"]},
                "attributes": {"type": "object"},
                "status": status,
                "softBounces": {"type": "integer"},
                "createdAt": {"type": "string", "format": "date-time"},
                "updatedAt": {"type": "string", "format": "date-time"},
            },
        },
        "HistoryRecordIn": {
            "type": "object",
            "additionalProperties": False,
            "required": ["originalId"],
            "properties": {
                "originalId": original_id,
                "type": {"type": "string", "enum": list(settings.history_types), "default": "purchase"},
                "time": {"type": "string", "format": "date-time", "description": "without an offset: service.timezone"},
                "sku": {"type": "string"},
                "price": {"type": "number"},
                "quantity": {"type": "number", "description": "negative = credit"},
                "total": {"type": "number"},
                "fields": {
                    "type": "object",
                    "propertyNames": {"pattern": "^custom([1-9]|1[0-9]|2[0-6])$"},
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "History": {
            "type": "object",
            "properties": {
                "originalId": original_id,
                "records": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string"},
                            "time": {"type": "string", "format": "date-time"},
                            "sku": {"type": "string"},
                            "price": {"type": "number"},
                            "quantity": {"type": "number"},
                            "total": {"type": "number"},
                            "fields": {"type": "object"},
                        },
                    },
                },
            },
        },
        "Accepted": {"type": "object", "properties": {"accepted": {"type": "integer"}, "originalId": original_id}},
    }


def _send_paths() -> dict[str, Any]:
    """The trigger, campaign and batch routes (streamapp.http.routes.triggers, batch_routes)."""
    trigger = {"name": "trigger", "in": "path", "required": True, "schema": {"type": "string"}}
    campaign = {"name": "campaign", "in": "path", "required": True, "schema": {"type": "string"}}
    batch_id = {"name": "batchId", "in": "path", "required": True, "schema": {"type": "string"}}
    single = {
        "type": "object",
        "additionalProperties": False,
        "required": ["originalId"],
        "properties": {
            "originalId": {"type": "string", "minLength": 1, "maxLength": 256},
            "email": {"type": ["string", "null"], "format": "email", "description": "creates an unknown recipient"},
            "properties": {"type": "object", "description": "`properties` in the template"},
            "saveProps": {"type": "boolean", "default": False, "description": "store properties named like attributes"},
            "deliveryTime": {"type": "string", "format": "date-time", "description": "not sent before"},
            "idempotencyKey": {"type": "string", "maxLength": 256, "description": "or the Idempotency-Key header"},
        },
    }
    row = {
        "type": "object",
        "required": ["originalId"],
        "properties": {
            "originalId": {"type": "string", "minLength": 1, "maxLength": 256},
            "email": {"type": ["string", "null"], "format": "email"},
            "attributes": _ref("Attributes"),
            "properties": {"type": "object"},
        },
    }
    rows = {
        "required": True,
        "content": {
            JSON: {"schema": {"type": "array", "items": row}},
            NDJSON: {"schema": row, "description": "one JSON object per line"},
            "text/csv": {"description": "header row: originalId, email, attribute names; delimiter , ; tab or |"},
        },
    }
    batch_accepted = _accepted(
        {
            "type": "object",
            "properties": {
                "batchId": {"type": "string"},
                "accepted": {"type": "integer"},
                "rejected": {"type": "integer"},
                "errors": {"type": "array", "items": {"type": "object"}, "description": "first 100; line or item"},
                "ignoredColumns": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "CSV columns not stored",
                },
            },
        }
    )

    def batch_op(summary: str) -> dict[str, Any]:
        """A batch send route: rows in, 202 with the batch's id and counts."""
        return _op(summary, "send", {"202": batch_accepted, **_errors(401, 403, 404, 413, 422)}, requestBody=rows)

    counts = {k: {"type": "integer"} for k in ("total", "queued", "scheduled", "sent", "deferred", "failed",
                                                "suppressed", "rejected")}  # fmt: skip
    idempotency = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
    return {
        "/api/v1/triggers/{trigger}/messages": {
            "parameters": [trigger, idempotency],
            "post": _op(
                "One transactional message (same idempotency key and body within 24 h: same messageId)",
                "send",
                {
                    "202": _accepted({"type": "object", "properties": {"messageId": {"type": "string"}}}),
                    "409": _error("Idempotency key used with another body in the last 24 hours"),
                    **_errors(401, 403, 404, 413, 422, 503),
                },
                requestBody={"required": True, "content": {JSON: {"schema": single}}},
            ),
        },
        "/api/v1/triggers/{trigger}/batches": {
            "parameters": [trigger],
            "post": batch_op("Batch transactional: each row updates its recipient and gets the trigger's message"),
        },
        "/api/v1/campaigns/{campaign}/sends": {
            "parameters": [
                campaign,
                {
                    "name": "sendTime",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "format": "date-time"},
                    "description": "ISO 8601; absent or past: now",
                },
            ],
            "post": batch_op("Send campaign: each row updates its recipient and gets the campaign"),
        },
        "/api/v1/batches/{batchId}": {
            "parameters": [
                batch_id,
                {
                    "name": "partitions",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "internal: counts of these ledger partitions only (workers ask each other)",
                },
            ],
            "get": _op(
                "A batch's counts; they converge to the total",
                "send",
                {
                    "200": {
                        "description": "counts",
                        "content": {JSON: {"schema": {"type": "object", "properties": counts}}},
                    },
                    **_errors(401, 403, 404, 503),
                },
            ),
        },
    }


def _sending_paths() -> dict[str, Any]:
    """Routes a worker serves when it sends mail ([smtp], or the dev sink)."""
    message_id = {"name": "messageId", "in": "path", "required": True, "schema": {"type": "string"}}
    token = {
        "name": "token",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "HMAC token from the message's List-Unsubscribe link",
    }
    state = {
        "type": "object",
        "properties": {
            "messageId": {"type": "string"},
            "priority": {"enum": ["transactional", "batch", "campaign"]},
            "status": {"enum": ["scheduled", "queued", "sent", "deferred", "failed", "suppressed"]},
            "attempts": {"type": "integer"},
            "reason": {"type": ["string", "null"]},
            "lastReply": {
                "type": ["object", "null"],
                "properties": {"code": {"type": "integer"}, "text": {"type": "string"}},
            },
            "createdAt": {"type": "string", "format": "date-time"},
            "updatedAt": {"type": "string", "format": "date-time"},
        },
    }
    html: dict[str, Any] = {"text/html": {}}
    return {
        **_send_paths(),
        "/api/v1/messages/{messageId}": {
            "parameters": [message_id],
            "get": _op(
                "A message's status",
                "send",
                {
                    "200": {"description": "the ledger row", "content": {JSON: {"schema": state}}},
                    **_errors(401, 403, 404, 503),
                },
            ),
        },
        "/u/{token}": {
            "parameters": [token],
            "get": _op(
                "Unsubscribe confirmation page",
                None,
                {
                    "200": {"description": "a page with a button", "content": html},
                    "404": {"description": "unknown token"},
                },
            ),
            "post": _op(
                "One-click unsubscribe (RFC 8058): no redirect",
                None,
                {"200": {"description": "unsubscribed", "content": html}, "404": {"description": "unknown token"}},
            ),
        },
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    db = {"name": "db", "in": "path", "required": True, "schema": {"type": "string", "enum": list(settings.databases)}}
    oid = {
        "name": "originalId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
    }
    accepted = _accepted(_ref("Accepted"))
    recipient_path = {
        "parameters": [db, oid],
        "get": _op(
            "Read a recipient",
            "recipients:read",
            {
                "200": {"description": "The recipient", "content": {JSON: {"schema": _ref("Recipient")}}},
                **_errors(401, 403, 404, 422, 503),
            },
        ),
        "put": _op(
            "Upsert a recipient (only the fields given are touched)",
            "recipients:write",
            {"202": accepted, **_errors(401, 403, 404, 413, 422)},
            requestBody={"required": True, "content": {JSON: {"schema": _ref("RecipientUpdate")}}},
        ),
        "delete": _op(
            "Erase the recipient and its history", "recipients:write", {"202": accepted, **_errors(401, 403, 404, 422)}
        ),
    }
    paths = {
        "/healthz": {
            "get": _op("Readiness", None, {"200": {"description": "ready"}, "503": {"description": "not ready"}})
        },
        "/metrics": {
            "get": _op(
                "Prometheus exposition", None, {"200": {"description": "metrics", "content": {"text/plain": {}}}}
            )
        },
        "/api/v1/openapi.json": {"get": _op("This document", None, {"200": {"description": "OpenAPI 3.1"}})},
        "/api/v1/databases": {
            "get": _op(
                "Databases and their schemas",
                "recipients:read",
                {"200": {"description": "databases"}, **_errors(401, 403)},
            )
        },
        "/api/v1/databases/{db}/recipients": {
            "parameters": [db],
            "post": _op(
                "Batch upsert of up to 10,000 recipients (all or nothing)",
                "recipients:write",
                {"202": accepted, **_errors(401, 403, 404, 413, 422)},
                requestBody=_batch_body("RecipientBatchItem"),
            ),
        },
        "/api/v1/databases/{db}/recipients/{originalId}": recipient_path,
        "/api/v1/databases/{db}/history": {
            "parameters": [db],
            "post": _op(
                "Add history records (all or nothing)",
                "recipients:write",
                {"202": accepted, **_errors(401, 403, 404, 413, 422)},
                requestBody=_batch_body("HistoryRecordIn"),
            ),
        },
        "/api/v1/databases/{db}/recipients/{originalId}/history": {
            "parameters": [
                db,
                oid,
                {
                    "name": "type",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": list(settings.history_types)},
                },
            ],
            "get": _op(
                "History, newest first",
                "recipients:read",
                {
                    "200": {"description": "records", "content": {JSON: {"schema": _ref("History")}}},
                    **_errors(401, 403, 404, 422, 503),
                },
            ),
        },
    }
    if settings.smtp is not None:
        paths.update(_sending_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamapp", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
