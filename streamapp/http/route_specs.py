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
    SEGMENT_DEFINITION,
    Accepted,
    AudienceSend,
    BatchAccepted,
    BatchCancelled,
    BatchRow,
    BatchStatus,
    BounceEvents,
    BouncesAccepted,
    CampaignReport,
    Databases,
    DateTimeText,
    Erased,
    Healthz,
    History,
    HistoryBatch,
    HistoryRecordIn,
    IdempotencyKey,
    ItemId,
    MembersCursor,
    MembersLimit,
    MessageAccepted,
    MessageView,
    OriginalId,
    PartitionCounts,
    RecipientBatch,
    RecipientBatchItem,
    RecipientSegments,
    RecipientUpdate,
    RecipientView,
    SegmentCounts,
    SegmentDeleted,
    SegmentInfo,
    SegmentList,
    SegmentMembers,
    SegmentName,
    SegmentPreview,
    SegmentUse,
    TrackingToken,
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
    routes = service_routes() + recipient_routes() + segment_routes()
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


def segment_routes() -> list[Route]:
    """Segment definitions, counts, members, previews (streamapp.http.routes.segments)."""
    base = "/api/v1/databases/{db}/segments"
    one = f"{base}/{{segment}}"
    segment = Param("segment", "path", SegmentName)
    partitions = Param("partitions", "query", str, "internal: these partitions only (workers ask each other)")
    definition = Body((Content(JSON, SEGMENT_DEFINITION),), "the bare definition (SPEC §9)")
    refused = error(409, "a configured segment (change it in the file), or one other segments reference")
    in_use = error(409, "a configured segment, one other segments reference, or the audience of a scheduled send")
    uses = Param("uses", "query", str, "internal: with `partitions`, whether a scheduled send there uses the segment")
    limit = Param("limit", "query", MembersLimit, "members per page (default 1,000)")
    cursor = Param("cursor", "query", MembersCursor, "the `cursor` of the previous page")
    return [
        Route("GET", base, "listSegments", "Segments with their counts and state", "recipients:read",
              answer(200, "segments (SegmentCounts with `partitions`)", AnyOf((SegmentList, SegmentCounts))),
              errors=(401, 403, 404, 422, 503), params=(DB, partitions), tags=("segments",)),
        Route("POST", f"{base}/preview", "previewSegment",
              "Evaluate an unsaved definition now: its count and up to 20 members", "recipients:read",
              answer(200, "the preview", SegmentPreview), errors=(*BODY_ERRORS, 503), body=definition,
              params=(DB, partitions), tags=("segments",)),
        Route("GET", one, "getSegment", "A segment: definition, count, state, updatedAt, source", "recipients:read",
              answer(200, "the segment (SegmentUse with `partitions` and `uses`)", AnyOf((SegmentInfo, SegmentUse))),
              errors=(401, 403, 404, 422, 503), params=(DB, segment, partitions, uses), tags=("segments",)),
        Route("PUT", one, "putSegment", "Define or replace a segment; it is built over the existing recipients",
              "admin", answer(200, "stored: building", SegmentInfo), errors=(*BODY_ERRORS, refused, 503),
              body=definition, params=(DB, segment), tags=("segments",)),
        Route("DELETE", one, "deleteSegment", "Remove an API-defined segment", "admin",
              answer(200, "removed", SegmentDeleted), errors=(401, 403, 404, in_use, 422, 503),
              params=(DB, segment), tags=("segments",)),
        Route("GET", f"{one}/members", "getSegmentMembers", "Member originalIds, paged", "recipients:read",
              answer(200, "a page", SegmentMembers), errors=(401, 403, 404, 422, 503),
              params=(DB, segment, limit, cursor), tags=("segments",)),
        Route("GET", f"{recipient_path()}/segments", "getRecipientSegments", "The segments a recipient is in now",
              "recipients:read", answer(200, "its segments", RecipientSegments), errors=(401, 403, 404, 422, 503),
              params=(DB, ORIGINAL_ID), tags=("segments",)),
    ]  # fmt: skip


def recipient_path() -> str:
    return "/api/v1/databases/{db}/recipients/{originalId}"


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
    audience = Content(JSON, AnyOf((list[BatchRow], AudienceSend)), "rows, or one object: an audience send (SPEC §9)")
    campaign_body = Body((audience, *rows.content[1:]), f"{rows.description}; or an audience send")
    batch_accepted = answer(202, ACCEPTED, BatchAccepted)
    idempotency = Param("Idempotency-Key", "header", IdempotencyKey, "or `idempotencyKey` in the body")
    replayed = Param("Idempotent-Replayed", "header", Literal["true"], "the key was seen: the earlier messageId")
    send_time = Param("sendTime", "query", DateTimeText, "ISO 8601; absent or past: now")
    partitions = Param(
        "partitions", "query", str, "internal: counts of these ledger partitions only (workers ask each other)"
    )
    progress = Param("audience", "query", str, "internal: with `partitions`, an audience send's progress there")
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
              "Send campaign: each row updates its recipient and gets the campaign; or an audience send", "send",
              batch_accepted, errors=send_errors, body=campaign_body, params=(CAMPAIGN, send_time), tags=("sending",)),
        Route("GET", "/api/v1/batches/{batchId}", "getBatch", "A batch's counts; they converge to the total", "send",
              answer(200, "counts (PartitionCounts with `partitions`)", AnyOf((BatchStatus, PartitionCounts))),
              errors=(401, 403, 404, 422, 503),
              params=(Param("batchId", "path", ItemId), partitions, progress), tags=("sending",)),
        Route("POST", "/api/v1/batches/{batchId}/cancel", "cancelBatch",
              "Cancel a batch: its messages not yet sent become failed (reason cancelled); idempotent", "send",
              answer(202, "nothing more of the batch is sent", BatchCancelled), errors=(401, 403, 404, 422, 503),
              params=(Param("batchId", "path", ItemId), partitions), tags=("sending",)),
        Route("GET", "/api/v1/campaigns/{campaign}/report", "getCampaignReport",
              "What became of a campaign's messages: sent, delivered, bounced, complaints, unsubscribes, unique"
              " human opens and unique clicks", "send",
              answer(200, "the report (PartitionCounts with `partitions`)", AnyOf((CampaignReport, PartitionCounts))),
              errors=(401, 403, 404, 422, 503), params=(CAMPAIGN, partitions), tags=("sending",)),
        Route("GET", "/api/v1/messages/{messageId}", "getMessage", "A message's status", "send",
              answer(200, "the ledger row", MessageView), errors=(401, 403, 404, 503),
              params=(Param("messageId", "path", ItemId),), tags=("sending",)),
        Route("POST", "/api/v1/bounces", "postBounces",
              "Bounce and complaint events from a provider's webhook (SPEC §11); the `send` token as bearer,"
              " basic-auth password or `?token=`", "send",
              answer(202, "the events naming a message are recorded", BouncesAccepted),
              errors=(401, 403, 413, 422, 503), body=Body((Content(JSON, BounceEvents),), "the generic form"),
              params=(Param("provider", "query", Literal["generic", "ses", "sendgrid", "postmark", "mailgun"],
                            "the webhook's form (only `generic` is read for now)"),
                      Param("token", "query", str, "the `send` token, for providers that cannot send a header")),
              tags=("sending",)),
    ]  # fmt: skip


def unsubscribe_routes() -> list[Route]:
    """The links of every message: the unsubscribe page and RFC 8058 one-click unsubscribe
    (streamapp.http.routes.unsubscribe), the open pixel and the click redirect (streamapp.http.routes.tracking)."""
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
        *tracking_routes(),
    ]  # fmt: skip


def tracking_routes() -> list[Route]:
    """The open pixel and the click redirect (SPEC §8): no auth, the signed token decides."""
    token = Param("token", "path", TrackingToken, "signed token from the message's HTML")
    unknown = error(404, "unknown, altered or unsigned token: nothing recorded, no redirect")
    no_store = Param("Cache-Control", "header", str, "no-store")
    location = Param("Location", "header", str, "the URL the token was signed with")
    return [
        Route("GET", "/t/o/{token}", "trackOpen", "Open pixel: records the message's open once", None,
              Reply(200, "a 1x1 transparent GIF", (Content("image/gif"),), headers=(no_store,)), errors=(unknown,),
              params=(token,), tags=("tracking",)),
        Route("GET", "/t/c/{token}", "trackClick", "Click redirect: records the link's click once, then redirects",
              None, Reply(302, "to the link's URL", headers=(location, no_store)), errors=(unknown,),
              params=(token,), tags=("tracking",)),
    ]  # fmt: skip
