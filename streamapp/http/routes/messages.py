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
from streamapp.runtime import Sending
from streamapp.settings import Settings
from streamapp.tables.messages import MESSAGES


class MessageRoutes:
    def __init__(self, settings: Settings, sending: Sending, auth: Authenticator, owners: OwnerRouter) -> None:
        self.partitions = settings.service.partitions
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
                raise not_found(f"message {message_id!r} (not processed yet, or never accepted)")
            state = decode_state(raw)
            require_database(token, state.database)
            return json_response(state.public())

        return await self.owners.serve(request, MESSAGES, partition, read)
