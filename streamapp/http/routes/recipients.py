"""Routes for databases, recipients and history (SPEC §4).

Writes are validated by the request models of streamapp.http.schemas (the ones the OpenAPI
document is generated from) with the database's checks bound, published to Kafka and answered
202 once Kafka acknowledged them; the agent applies them in order.
Reads go to the worker that owns the recipient's partition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from streamapp import metrics
from streamapp.core import clock
from streamapp.core.engagement import is_engagement
from streamapp.core.keys import recipient_key
from streamapp.core.models import DeleteRecipient, EraseIdempotency, RecipientCommand, decode_history, decode_recipient
from streamapp.core.validation import FieldError, check_original_id
from streamapp.http.auth import Authenticator, require_database
from streamapp.http.bodies import BatchRejected, read_batch, read_json
from streamapp.http.errors import json_response, not_found, unprocessable
from streamapp.http.forwarding import OwnerRouter
from streamapp.http.schemas import (
    HistoryRecordIn,
    RecipientBatchItem,
    RecipientUpdate,
    batch_upsert,
    history_append,
    recipient_upsert,
)
from streamapp.http.validate import Check, validate
from streamapp.runtime import StreamApp
from streamapp.settings import DatabaseSettings
from streamapp.tables.recipients import HISTORY, RECIPIENTS

MAX_BATCH = 10_000

#: Validates one item of a batch body at its JSON path.
ParseItem = Callable[[Any, str], tuple[RecipientCommand | None, list[FieldError]]]


class RecipientRoutes:
    def __init__(
        self, sa: StreamApp, auth: Authenticator, owners: OwnerRouter, checks: Mapping[str, Mapping[str, Check]]
    ) -> None:
        self.sa = sa
        self.settings = sa.settings
        self.auth = auth
        self.owners = owners
        #: The configuration-dependent checks the request models name, by database.
        self.checks = checks

    # -- helpers -----------------------------------------------------------

    def _database(self, request: web.Request, scope: str) -> DatabaseSettings:
        token = self.auth.require(request, scope)
        name = request.match_info["db"]
        db = self.settings.databases.get(name)
        if db is None:
            raise not_found(f"database {name!r}")
        require_database(token, name)
        return db

    def _original_id(self, request: web.Request) -> str:
        original_id = request.match_info["originalId"]
        errors = check_original_id(original_id, "/originalId")
        if errors:
            raise unprocessable(errors, "invalid originalId")
        return original_id

    async def _publish(self, db: DatabaseSettings, commands: list[RecipientCommand], source: str) -> None:
        await self.sa.publisher.publish(commands)
        metrics.INGEST_ROWS.labels(database=db.name, source=source, outcome="accepted").inc(len(commands))

    async def _accept_all(
        self, request: web.Request, db: DatabaseSettings, parse: ParseItem, what: str, single: bool = False
    ) -> web.Response:
        """A batch body is all or nothing: 422 naming the bad fields (reading stops at the 1,000th), else 202.
        `single`: one JSON object is a body too (read_batch)."""
        if not request.body_exists:  # the body is required (an empty array or NDJSON is still a body)
            forms = "a JSON object, a JSON array or NDJSON" if single else "a JSON array or NDJSON"
            raise unprocessable([FieldError("/", f"missing body: {forms} of {what}")], "missing body")
        limit = self.settings.service.max_body_bytes
        try:
            commands: list[RecipientCommand] = await read_batch(
                request, limit, parse, what=what, max_items=MAX_BATCH, single=single
            )
        except BatchRejected as exc:
            metrics.INGEST_ROWS.labels(database=db.name, source="api", outcome="rejected").inc(exc.items)
            raise
        await self._publish(db, commands, "api")
        return json_response({"accepted": len(commands)}, status=202)

    # -- handlers ----------------------------------------------------------

    async def list_databases(self, request: web.Request) -> web.Response:
        token = self.auth.require(request, "recipients:read")
        databases = [
            {
                "name": db.name,
                "autoCreateAttributes": db.auto_create_attributes,
                "attributes": dict(db.attributes),
            }
            for db in self.settings.databases.values()
            if token.allows_database(db.name)
        ]
        return json_response({"databases": databases, "historyTypes": list(self.settings.history_types)})

    async def put_recipient(self, request: web.Request) -> web.Response:
        db = self._database(request, "recipients:write")
        original_id = self._original_id(request)
        body = await read_json(request, self.settings.service.max_body_bytes)
        checked = validate(body, RecipientUpdate, checks=self.checks[db.name])
        if checked.value is None:
            metrics.INGEST_ROWS.labels(database=db.name, source="api", outcome="rejected").inc()
            raise unprocessable(checked.errors)
        await self._publish(db, [recipient_upsert(checked.value, db.name, original_id, clock.now_iso())], "api")
        return json_response({"originalId": original_id, "accepted": 1}, status=202)

    async def post_recipients(self, request: web.Request) -> web.Response:
        db = self._database(request, "recipients:write")
        at, checks = clock.now_iso(), self.checks[db.name]

        def parse(item: Any, path: str) -> tuple[RecipientCommand | None, list[FieldError]]:
            checked = validate(item, RecipientBatchItem, checks=checks, path=path)
            return (None, checked.errors) if checked.value is None else (batch_upsert(checked.value, db.name, at), [])

        return await self._accept_all(request, db, parse, "recipients")

    async def get_recipient(self, request: web.Request) -> web.Response:
        db = self._database(request, "recipients:read")
        original_id = self._original_id(request)
        key = recipient_key(db.name, original_id)

        async def read() -> web.Response:
            raw = self.sa.recipients.get(self.owners.partition(key), key)
            if raw is None:
                raise not_found(f"recipient {original_id!r} in database {db.name!r}")
            return json_response(decode_recipient(raw).public())

        return await self.owners.serve_key(request, RECIPIENTS, key, read)

    async def delete_recipient(self, request: web.Request) -> web.Response:
        db = self._database(request, "recipients:write")
        original_id = self._original_id(request)
        await self._publish(db, [DeleteRecipient(database=db.name, originalId=original_id)], "api")
        # Idempotency records live in their key's partition: every partition erases the recipient's (SPEC §3).
        await self.sa.publisher.publish_everywhere(EraseIdempotency(database=db.name, originalId=original_id))
        return json_response({"originalId": original_id, "deleted": True}, status=202)

    async def post_history(self, request: web.Request) -> web.Response:
        db = self._database(request, "recipients:write")
        at, checks = clock.now_iso(), self.checks[db.name]

        def parse(item: Any, path: str) -> tuple[RecipientCommand | None, list[FieldError]]:
            checked = validate(item, HistoryRecordIn, checks=checks, path=path)
            return (None, checked.errors) if checked.value is None else history_append(checked.value, db.name, at, path)

        return await self._accept_all(request, db, parse, "history records", single=True)

    async def get_history(self, request: web.Request) -> web.Response:
        db = self._database(request, "recipients:read")
        original_id = self._original_id(request)
        wanted = request.query.get("type")
        if wanted is not None and wanted not in self.settings.history_types and not is_engagement(wanted):
            raise unprocessable([FieldError("/query/type", "unknown history type")])
        key = recipient_key(db.name, original_id)

        async def read() -> web.Response:
            raw = self.sa.history.get(self.owners.partition(key), key)
            records = decode_history(raw) if raw is not None else []
            if wanted is not None:
                records = [r for r in records if r.type == wanted]
            return json_response({"originalId": original_id, "records": records})

        return await self.owners.serve_key(request, HISTORY, key, read)
