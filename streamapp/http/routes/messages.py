"""`GET /api/v1/messages/{messageId}` (scope `send`): the message's ledger row.

The id names its partition (streamapp.core.ids), so the request goes straight to the worker
owning that partition of the `messages` table, like recipient reads (streamapp.http.forwarding).
A well-formed id without a row is 404: the message was not processed yet or never existed.
"""

from __future__ import annotations

from aiohttp import web

from streamapp.core.ids import partition_of
from streamapp.core.models import decode_state
from streamapp.http.auth import Authenticator, require_database
from streamapp.http.errors import json_response, not_found
from streamapp.http.forwarding import OwnerRouter
from streamapp.runtime import StreamApp
from streamapp.tables.messages import MESSAGES


class MessageRoutes:
    def __init__(self, sa: StreamApp, auth: Authenticator, owners: OwnerRouter) -> None:
        self.sa = sa
        self.auth = auth
        self.owners = owners

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/messages/{messageId}", self.get_message)

    async def get_message(self, request: web.Request) -> web.Response:
        token = self.auth.require(request, "send")
        message_id = request.match_info["messageId"]
        partition = partition_of(message_id)
        if partition is None or partition >= self.sa.settings.service.partitions or self.sa.messages is None:
            raise not_found(f"message {message_id!r}")
        owner = self.owners.owner_of_partition(MESSAGES, partition)
        if owner is not None:
            return await self.owners.forward(request, owner)
        raw = self.sa.messages.data._db_for_partition(partition).get(message_id.encode())
        if raw is None:
            raise not_found(f"message {message_id!r} (not processed yet, or never accepted)")
        state = decode_state(raw)
        require_database(token, state.database)
        return self.owners.served_here(json_response(state.public()))
