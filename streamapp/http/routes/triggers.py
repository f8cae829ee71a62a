"""Routes that make streamapp send (SPEC §4, scope `send`).

- `POST /api/v1/triggers/{trigger}/messages`: one transactional message (streamapp.sending.single),
  idempotent with a key (streamapp.sending.idempotency);
- `POST /api/v1/triggers/{trigger}/batches`: batch transactional, at `batch` priority;
- `POST /api/v1/campaigns/{campaign}/sends?sendTime=`: a campaign to the body's rows, or, with a JSON
  object body, to a segment's active members at `sendTime` (an audience send, streamapp.sending.audience).

Batch bodies (CSV, NDJSON, a JSON array) are spooled to `<data_dir>/spool/` as they arrive, then
read in chunks (streamapp.sending.batch_rows): a 100 MB body is never held in memory. The
answer, 202 with the batch id and the counts, comes once every message is acknowledged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from streamapp import metrics
from streamapp.core import clock
from streamapp.core.ids import batch_partition, idempotent_message_id, new_batch_id
from streamapp.core.models import BatchInfo, IdempotencyRecord, RowError, SendMessage, UpsertRecipient
from streamapp.core.validation import FieldError, check_declared_properties, parse_datetime, send_time_problem
from streamapp.http.auth import Authenticator, require_database
from streamapp.http.bodies import NDJSON_TYPES, SPOOL_QUOTA_BODIES, Spool, parse_json, read_limited
from streamapp.http.errors import ApiError, json_response, not_found, unprocessable
from streamapp.http.forwarding import OWNER_PATIENCE, OwnerRouter
from streamapp.http.schemas import AudienceSend, TriggerMessage
from streamapp.http.validate import Check, validate
from streamapp.kafka.publisher import ACK_DEADLINE, acknowledged_within, faust_send
from streamapp.kafka.topics import messages_topic
from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.runtime import Sending, StreamApp
from streamapp.sending.audience import audience_command, publish_audience
from streamapp.sending.batch_rows import Format, first_recipient_write, read_rows
from streamapp.sending.batches import BatchInterrupted, BatchSender, NothingAccepted, SendTarget, send_rows
from streamapp.sending.enqueue import publish_messages
from streamapp.sending.idempotency import IdempotencyKeys, scoped_key
from streamapp.sending.single import SingleRequest, build_commands, parse_single
from streamapp.settings import CampaignSettings, TokenSettings, TriggerSettings
from streamapp.tables.idempotency import IDEMPOTENCY

log = logging.getLogger(__name__)

CSV_TYPES = ("text/csv", "application/csv", "text/plain")
#: Row errors shown in the 202 answer; GET /api/v1/batches/{id} lists up to 1,000.
ERRORS_IN_ANSWER = 100


Sent = TypeVar("Sent", TriggerSettings, CampaignSettings)


def body_format(content_type: str) -> Format:
    if content_type in CSV_TYPES:
        return "csv"
    if content_type in NDJSON_TYPES:
        return "ndjson"
    return "json"


class TriggerRoutes:
    def __init__(
        self,
        sa: StreamApp,
        sending: Sending,
        auth: Authenticator,
        owners: OwnerRouter,
        checks: Mapping[str, Mapping[str, Check]],
    ) -> None:
        self.sa = sa
        self.settings = sa.settings
        self.auth = auth
        self.owners = owners
        self.keys = IdempotencyKeys(sending.idempotency, sa.settings.service.partitions)
        self.engine = sending.engine
        self.id_key = unsubscribe_keys(sa.settings).signing  # tags message ids (streamapp.core.ids)
        self.checks = checks
        service = sa.settings.service
        self.spool = Spool(service.data_dir / "spool", SPOOL_QUOTA_BODIES * service.max_batch_bytes)
        self.spool.clear()  # bodies spooled by a previous run were never answered 202: their clients retry

    def _configured(
        self, request: web.Request, what: str, configured: Mapping[str, Sent]
    ) -> tuple[TokenSettings, Sent]:
        """The token (scope `send`, allowed the database) and the trigger or campaign the path names."""
        token = self.auth.require(request, "send")
        name = request.match_info[what]
        found = configured.get(name)
        if found is None:
            raise not_found(f"{what} {name!r}")
        require_database(token, found.database)
        return token, found

    # -- one message -------------------------------------------------------------------------

    async def post_message(self, request: web.Request) -> web.Response:
        token, trigger = self._configured(request, "trigger", self.settings.triggers)
        data = await read_limited(request, self.settings.service.max_body_bytes)
        db = self.settings.databases[trigger.database]
        body = parse_json(data)
        checked = validate(body, TriggerMessage, checks=self.checks[db.name])  # the model the OpenAPI shows
        if checked.value is None:
            raise unprocessable(checked.errors)
        single = parse_single(body, db, self.settings.service.zone, request.headers.get("Idempotency-Key"), trigger)
        if single.idempotency_key is None:
            upsert, message = self._commands(single, trigger)
            await self._publish(upsert, message)
            return json_response({"messageId": message.messageId}, status=202)
        key = scoped_key(token.sha256, trigger.name, single.idempotency_key)
        partition = self.keys.partition(key)
        # The key's owner checks and records it; while a dead owner's partitions move, wait for it, then
        # go on without it: the message id derived from the request makes a retry a replay all the same.
        write = functools.partial(self._idempotent, key, single, trigger)
        alone = functools.partial(self._without_owner, key, single, trigger)
        return await self.owners.serve(
            request, IDEMPOTENCY, partition, write, body=data, patience=OWNER_PATIENCE, without_owner=alone
        )

    async def _idempotent(self, key: bytes, single: SingleRequest, trigger: TriggerSettings) -> web.Response:
        async with self.keys.locked(key):
            record = self.keys.get(key)
            if record is not None and record.bodyHash != single.body_hash:
                raise ApiError(409, "idempotency key already used with another body in the last 24 hours")
            replayed = record is not None and record.published  # else this call does the publishing
            if record is None:
                upsert, message = self._commands(single, trigger, key)
                record = IdempotencyRecord(
                    bodyHash=single.body_hash, messageId=message.messageId, createdAt=message.enqueuedAt,
                    upsert=upsert, message=message,
                )  # fmt: skip
                await self.keys.put(key, record)
            if not record.published:
                await self._publish(record.upsert, record.message)
                record.published = True
                await self.keys.put(key, record)
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return json_response({"messageId": record.messageId}, status=202, headers=headers)

    async def _without_owner(self, key: bytes, single: SingleRequest, trigger: TriggerSettings) -> web.Response:
        """No owner of the key answered: publish with the derived id, unrecorded (README "Idempotency").

        A retry gets the same id, and the ledger sends the message once; what this cannot do is tell a
        reuse of the key with another body (a 409 when the owner answers).
        """
        upsert, message = self._commands(single, trigger, key)
        await self._publish(upsert, message)
        metrics.IDEMPOTENCY_UNCHECKED.inc()
        log.info("message %s accepted without the owner of its idempotency key", message.messageId)
        return json_response({"messageId": message.messageId}, status=202)

    def _commands(
        self, single: SingleRequest, trigger: TriggerSettings, key: bytes | None = None
    ) -> tuple[UpsertRecipient, SendMessage]:
        """The upsert and the message, whose id is tagged as one the API issued (streamapp.core.ids): derived
        from the request when it has an idempotency key (`key`), else new."""
        partitions = self.settings.service.partitions
        derived = None
        if key is not None:
            request = key + b"\0" + single.body_hash.encode()
            derived = idempotent_message_id(trigger.database, single.original_id, partitions, self.id_key, request)
        return build_commands(single, trigger, partitions, clock.now_iso(), self.id_key, message_id=derived)

    async def _publish(self, upsert: UpsertRecipient, message: SendMessage) -> None:
        """Upsert first (created before the message is read, most of the time), both acknowledged
        (a 503 once Kafka is out for ACK_DEADLINE)."""
        async with acknowledged_within(ACK_DEADLINE):
            pending = await self.sa.publisher.enqueue([upsert])
            await publish_messages(faust_send(self.sa.faust), self.settings, [message])
            for ack in pending:
                await ack
        metrics.INGEST_ROWS.labels(database=message.database, source="api", outcome="accepted").inc()

    # -- batches -----------------------------------------------------------------------------

    async def post_trigger_batch(self, request: web.Request) -> web.Response:
        token, trigger = self._configured(request, "trigger", self.settings.triggers)
        return await self._batch(request, token, SendTarget.trigger(trigger), send_time=None)

    async def post_campaign_sends(self, request: web.Request) -> web.Response:
        token, campaign = self._configured(request, "campaign", self.settings.campaigns)
        return await self._batch(request, token, SendTarget.campaign(campaign), send_time=self._send_time(request))

    async def _audience(
        self, request: web.Request, target: SendTarget, path: Path, query_time: str | None
    ) -> web.Response:
        """A JSON object body: the campaign to a segment (422 naming each bad field, 404 for an unknown segment),
        answered once Kafka has the audience command of every partition and the BatchInfo."""
        data = await asyncio.to_thread(_head, path, self.settings.service.max_body_bytes + 1)
        if len(data) > self.settings.service.max_body_bytes:
            raise ApiError(413, f"an audience send body is at most {self.settings.service.max_body_bytes} bytes")
        body = parse_json(data)
        checked = validate(body, AudienceSend, checks=self.checks[target.database])
        if checked.value is None:
            raise unprocessable(checked.errors)
        send = checked.value
        zone = self.settings.service.zone
        properties, errors = check_declared_properties(target.properties, send.properties, "/properties", zone,
                                                       owner=f"campaign {target.name!r}")  # fmt: skip
        errors += self._body_time_errors(request, send.sendTime)
        if errors:
            raise unprocessable(errors)
        if not self.engine.audiences.members.exists(target.database, send.segment):
            raise not_found(f"segment {send.segment!r} of database {target.database!r}")
        info = self._audience_info(target, send.segment, send.sendTime or query_time)
        topic = messages_topic(self.settings, target.priority)
        async with acknowledged_within(ACK_DEADLINE):
            command = audience_command(info, target.template, properties)
            await publish_audience(faust_send(self.sa.faust), topic, self.settings.service.partitions, command)
            await self.sa.publisher.publish_to(info, int(batch_partition(info.batchId) or 0))
        record_batch_metrics(info)
        return json_response(batch_answer(info), status=202)

    @staticmethod
    def _body_time_errors(request: web.Request, send_time: str | None) -> list[FieldError]:
        """`sendTime` in the body and the query is one too many; one over a year ahead is refused."""
        if send_time is None:
            return []
        if "sendTime" in request.query:
            return [FieldError("/sendTime", "give sendTime in the query or in the body, not both")]
        problem = send_time_problem(clock.parse_time(send_time), datetime.now(UTC))
        return [FieldError("/sendTime", problem)] if problem else []

    def _audience_info(self, target: SendTarget, segment: str, send_time: str | None) -> BatchInfo:
        """The BatchInfo of an audience send: its segment, no total yet, a send time only if ahead."""
        future = send_time if send_time and clock.parse_time(send_time) > datetime.now(UTC) else None
        batch_id = new_batch_id(random.randrange(self.settings.service.partitions))
        return BatchInfo(
            batchId=batch_id, database=target.database, kind="campaign", name=target.name, priority=target.priority,
            source="api", total=0, sendTime=future, createdAt=clock.now_iso(), segment=segment,
        )  # fmt: skip

    def _send_time(self, request: web.Request) -> str | None:
        """`?sendTime=` as UTC ISO; absent or past means now (None)."""
        raw = request.query.get("sendTime")
        if raw is None:
            return None
        parsed = parse_datetime(raw, self.settings.service.zone)
        if parsed is None:
            raise unprocessable([FieldError("/query/sendTime", "must be an ISO 8601 date-time")])
        if problem := send_time_problem(parsed, datetime.now(UTC)):
            raise unprocessable([FieldError("/query/sendTime", problem)])
        return clock.iso(parsed) if parsed > datetime.now(UTC) else None

    async def _batch(
        self, request: web.Request, token: TokenSettings, target: SendTarget, send_time: str | None
    ) -> web.Response:
        db, zone = self.settings.databases[target.database], self.settings.service.zone
        fmt = body_format(request.content_type)
        async with self.spool.body(request, self.settings.service.max_batch_bytes) as path:
            if target.kind == "campaign" and fmt == "json" and await asyncio.to_thread(_is_object, path):
                return await self._audience(request, target, path, send_time)
            if not token.allows("recipients:write"):
                rows = read_rows(path, fmt, db, zone, clock.now_iso(), rules=target.rules)
                if (place := await asyncio.to_thread(first_recipient_write, rows)) is not None:
                    raise ApiError(403, f"token {token.name!r} lacks scope 'recipients:write', which rows that "
                                        f"carry an email or attributes need ({_where(place)})")  # fmt: skip
            sender = BatchSender(self.settings, target, faust_send(self.sa.faust), source="api",
                                 send_time=send_time)  # fmt: skip
            rows = read_rows(path, fmt, db, zone, clock.now_iso(), rules=target.rules)
            try:
                info = await send_rows(sender, rows)
            except NothingAccepted as exc:
                raise unprocessable([FieldError("/", str(exc))], "nothing was accepted") from None
            except BatchInterrupted as exc:
                log.exception("batch %s interrupted", exc.batch_id)
                raise ApiError(503, f"{exc}; see GET /api/v1/batches/{exc.batch_id} before retrying") from None
        record_batch_metrics(info)
        return json_response(batch_answer(info), status=202)


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def _is_object(path: Path) -> bool:
    """Whether a JSON body is an object (an audience send), not an array of rows."""
    with path.open("rb") as f:
        return f.read(4096).lstrip().startswith(b"{")


def _where(place: RowError) -> str:
    return f"line {place.line}" if place.line is not None else f"item {place.item}"


def batch_answer(info: BatchInfo) -> dict[str, object]:
    return {
        "batchId": info.batchId,
        "accepted": None if info.segment else info.total,
        "rejected": info.rejected,
        "errors": info.public().get("errors", [])[:ERRORS_IN_ANSWER],
        "ignoredColumns": info.ignoredColumns,
    }


def record_batch_metrics(info: BatchInfo) -> None:
    source = "api" if info.source == "api" else f"file:{info.kind}"
    metrics.INGEST_ROWS.labels(database=info.database, source=source, outcome="accepted").inc(info.total)
    metrics.INGEST_ROWS.labels(database=info.database, source=source, outcome="rejected").inc(info.rejected)
