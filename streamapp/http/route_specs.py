"""Every route the worker serves today (SPEC §4), declared as Route values.

streamapp.http.handlers pairs each with its handler, registers them and builds the OpenAPI
document from the same list, so what is served and what is documented cannot differ. The send
routes exist only when the worker sends mail (`[smtp]`, or the dev sink), as in
streamapp.http.server.
"""

from __future__ import annotations

from typing import Literal

from streamapp.http.routing import CSV, FORM, HTML, JSON, NDJSON, TEXT, AnyOf, Body, Content, Param, Reply, Route, error
from streamapp.http.routing import json_reply as answer
from streamapp.http.schemas import (
    Accepted,
    BatchAccepted,
    BatchRow,
    BatchStatus,
    Databases,
    DateTimeText,
    Erased,
    Healthz,
    History,
    HistoryBatch,
    HistoryRecordIn,
    IdempotencyKey,
    ItemId,
    MessageAccepted,
    MessageView,
    OriginalId,
    PartitionCounts,
    RecipientBatch,
    RecipientBatchItem,
    RecipientUpdate,
    RecipientView,
    TriggerMessage,
    UnsubscribeToken,
)
from streamapp.settings import Settings

DB = Param("db", "path", "DatabaseName")
ORIGINAL_ID = Param("originalId", "path", OriginalId)
TRIGGER = Param("trigger", "path", "TriggerName")
CAMPAIGN = Param("campaign", "path", "CampaignName")
ONE_PER_LINE = "one JSON object per line"
CSV_ROWS = "header row: originalId, email, attribute names; delimiter , ; tab or |"
ACCEPTED = "Accepted: acknowledged by Kafka, applied asynchronously"
#: Errors of every route that reads a body of a database (sending routes add 503).
BODY_ERRORS = (401, 403, 404, 413, 422)


def api_routes(settings: Settings) -> list[Route]:
    """Today's routes, in the order of the document."""
    routes = service_routes() + recipient_routes()
    if settings.smtp is not None:
        routes += send_routes() + unsubscribe_routes()
    return routes


def service_routes() -> list[Route]:
    """Unauthenticated: readiness, metrics, this document (streamapp.http.server)."""
    return [
        Route("GET", "/healthz", "healthz", "Readiness", None, answer(200, "ready", Healthz),
              errors=(answer(503, "not ready", Healthz),), tags=("service",)),
        Route("GET", "/metrics", "metrics", "Prometheus exposition", None,
              Reply(200, "metrics", (Content(TEXT),)), tags=("service",)),
        Route("GET", "/api/v1/openapi.json", "openapi", "This document", None,
              Reply(200, "OpenAPI 3.1", (Content(JSON, {"type": "object"}),)), tags=("service",)),
    ]  # fmt: skip


def recipient_routes() -> list[Route]:
    """Databases, recipients and history (streamapp.http.routes.recipients)."""
    base = "/api/v1/databases"
    recipient = f"{base}/{{db}}/recipients/{{originalId}}"
    accepted = answer(202, ACCEPTED, Accepted)
    history_type = Param("type", "query", "AnyHistoryType", "only records of this type")
    return [
        Route("GET", base, "listDatabases", "Databases and their schemas", "recipients:read",
              answer(200, "databases", Databases), errors=(401, 403), tags=("recipients",)),
        Route("POST", f"{base}/{{db}}/recipients", "upsertRecipients",
              "Batch upsert of up to 10,000 recipients (all or nothing)", "recipients:write", accepted,
              errors=BODY_ERRORS, body=_items(RecipientBatch, RecipientBatchItem), params=(DB,), tags=("recipients",)),
        Route("GET", recipient, "getRecipient", "Read a recipient", "recipients:read",
              answer(200, "The recipient", RecipientView), errors=(401, 403, 404, 422, 503), params=(DB, ORIGINAL_ID),
              tags=("recipients",)),
        Route("PUT", recipient, "upsertRecipient", "Upsert a recipient (only the fields given are touched)",
              "recipients:write", accepted, errors=BODY_ERRORS, body=Body((Content(JSON, RecipientUpdate),)),
              params=(DB, ORIGINAL_ID), tags=("recipients",)),
        Route("DELETE", recipient, "eraseRecipient", "Erase the recipient and its history", "recipients:write",
              answer(202, ACCEPTED, Erased), errors=(401, 403, 404, 422), params=(DB, ORIGINAL_ID),
              tags=("recipients",)),
        Route("POST", f"{base}/{{db}}/history", "addHistory", "Add history records (all or nothing)",
              "recipients:write", accepted, errors=BODY_ERRORS, body=_items(HistoryBatch, HistoryRecordIn, single=True),
              params=(DB,), tags=("history",)),
        Route("GET", f"{recipient}/history", "getHistory", "History, newest first", "recipients:read",
              answer(200, "records", History), errors=(401, 403, 404, 422, 503),
              params=(DB, ORIGINAL_ID, history_type), tags=("history",)),
    ]  # fmt: skip


def _items(array: object, item: object, single: bool = False) -> Body:
    """A batch body: a JSON array or NDJSON of the same items; `single`: or one item as a JSON object."""
    json = Content(JSON, AnyOf((array, item)), "one item, or an array of them") if single else Content(JSON, array)
    return Body((json, Content(NDJSON, item, ONE_PER_LINE)), "all or nothing: one bad item, nothing is accepted")


def send_routes() -> list[Route]:
    """Triggers, campaigns, message and batch status (streamapp.http.routes.triggers, messages, batches)."""
    rows = Body(
        (Content(JSON, list[BatchRow]), Content(NDJSON, BatchRow, ONE_PER_LINE), Content(CSV, None, CSV_ROWS)),
        "rows; a bad row is rejected (listed in the answer), the others are sent",
    )
    batch_accepted = answer(202, ACCEPTED, BatchAccepted)
    idempotency = Param("Idempotency-Key", "header", IdempotencyKey, "or `idempotencyKey` in the body")
    replayed = Param("Idempotent-Replayed", "header", Literal["true"], "the key was seen: the earlier messageId")
    send_time = Param("sendTime", "query", DateTimeText, "ISO 8601; absent or past: now")
    partitions = Param(
        "partitions", "query", str, "internal: counts of these ledger partitions only (workers ask each other)"
    )
    send_errors = (*BODY_ERRORS, 503)
    return [
        Route("POST", "/api/v1/triggers/{trigger}/messages", "sendTriggerMessage",
              "One transactional message (same idempotency key and body within 24 h: same messageId)", "send",
              Reply(202, ACCEPTED, (Content(JSON, MessageAccepted),), headers=(replayed,)),
              errors=(error(409, "Idempotency key used with another body in the last 24 hours"), *send_errors),
              body=Body((Content(JSON, TriggerMessage),)), params=(TRIGGER, idempotency), tags=("sending",)),
        Route("POST", "/api/v1/triggers/{trigger}/batches", "sendTriggerBatch",
              "Batch transactional: each row updates its recipient and gets the trigger's message", "send",
              batch_accepted, errors=send_errors, body=rows, params=(TRIGGER,), tags=("sending",)),
        Route("POST", "/api/v1/campaigns/{campaign}/sends", "sendCampaign",
              "Send campaign: each row updates its recipient and gets the campaign", "send", batch_accepted,
              errors=send_errors, body=rows, params=(CAMPAIGN, send_time), tags=("sending",)),
        Route("GET", "/api/v1/batches/{batchId}", "getBatch", "A batch's counts; they converge to the total", "send",
              answer(200, "counts (PartitionCounts with `partitions`)", AnyOf((BatchStatus, PartitionCounts))),
              errors=(401, 403, 404, 422, 503),
              params=(Param("batchId", "path", ItemId), partitions), tags=("sending",)),
        Route("GET", "/api/v1/messages/{messageId}", "getMessage", "A message's status", "send",
              answer(200, "the ledger row", MessageView), errors=(401, 403, 404, 503),
              params=(Param("messageId", "path", ItemId),), tags=("sending",)),
    ]  # fmt: skip


def unsubscribe_routes() -> list[Route]:
    """The unsubscribe page and RFC 8058 one-click unsubscribe (streamapp.http.routes.unsubscribe)."""
    token = Param("token", "path", UnsubscribeToken, "HMAC token from the message's List-Unsubscribe link")
    unknown = error(404, "unknown token")
    one_click = Body(
        (Content(FORM, {"type": "object", "properties": {"List-Unsubscribe": {"const": "One-Click"}}}),),
        "what mail providers POST (RFC 8058); the token alone decides",
        required=False,
    )
    return [
        Route("GET", "/u/{token}", "unsubscribePage", "Unsubscribe confirmation page", None,
              Reply(200, "a page with a button", (Content(HTML),)), errors=(unknown,), params=(token,),
              tags=("unsubscribe",)),
        Route("POST", "/u/{token}", "unsubscribe", "One-click unsubscribe (RFC 8058): no redirect", None,
              Reply(200, "unsubscribed", (Content(HTML),)), errors=(unknown,), body=one_click, params=(token,),
              tags=("unsubscribe",)),
    ]  # fmt: skip
