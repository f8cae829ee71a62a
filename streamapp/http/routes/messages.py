"""`GET /api/v1/messages/{messageId}` (scope `send`): the message's ledger row, or `queued`.

The id names its partition (streamapp.core.ids), so the request goes straight to the worker
owning that partition of the `messages` table, like recipient reads (streamapp.http.forwarding).
A message has a ledger row once a worker processed it. Before that, an id the API issued (its tag
verifies, for a database the token may see) is `queued` (SPEC §3: from the 202 on, never 404),
until `[service] retention` after it was made, when its row would be gone anyway; any other id
without a row is 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from streamapp.core import clock
from streamapp.core.ids import Issued, issued, partition_of
from streamapp.core.models import PRIORITIES, decode_state
from streamapp.http.auth import Authenticator, require_database
from streamapp.http.errors import json_response, not_found
from streamapp.http.forwarding import OwnerRouter
from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.runtime import Sending
from streamapp.settings import Settings, TokenSettings
from streamapp.tables.messages import MESSAGES


class MessageRoutes:
    def __init__(self, settings: Settings, sending: Sending, auth: Authenticator, owners: OwnerRouter) -> None:
        self.partitions = settings.service.partitions
        self.databases = tuple(settings.databases)
        self.retention = settings.service.retention
        self.keys = unsubscribe_keys(settings).verifying
        self.messages = sending.messages
        self.auth = auth
        self.owners = owners

    async def get_message(self, request: web.Request) -> web.Response:
        token = self.auth.require(request, "send")
        message_id = request.match_info["messageId"]
        partition = partition_of(message_id)
        if partition is None or partition >= self.partitions:
            raise not_found(f"message {message_id!r}")

        async def read() -> web.Response:
            raw = self.messages.get(partition, message_id.encode())
            if raw is None:
                return json_response(self._queued(token, message_id))
            state = decode_state(raw)
            require_database(token, state.database)
            return json_response(state.public())

        return await self.owners.serve(request, MESSAGES, partition, read)

    def _queued(self, token: TokenSettings, message_id: str) -> dict[str, Any]:
        """The answer for an issued id that no worker processed yet; 404 for any other."""
        candidates = [(d, p) for d in self.databases if token.allows_database(d) for p in PRIORITIES]
        found = issued(message_id, self.keys, candidates)
        if found is None or _made(found) + self.retention < datetime.now(UTC):
            raise not_found(f"message {message_id!r}")
        at = clock.iso(_made(found))
        return {
            "messageId": message_id, "database": found.database, "priority": found.priority,
            "status": "queued", "createdAt": at, "updatedAt": at,
        }  # fmt: skip


def _made(found: Issued) -> datetime:
    return datetime.fromtimestamp(found.at, UTC)
