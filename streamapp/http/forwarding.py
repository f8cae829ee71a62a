"""Serving reads from any worker: find the worker that owns a row, forward if not us.

A table partition lives on one worker (streamapp.kafka.ownership names it). A forwarded request
is never forwarded again: while ownership moves, the answer is 503 with `Retry-After: 1`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from streamapp.core.keys import partition_for
from streamapp.http.errors import unavailable
from streamapp.kafka.ownership import Ownership, OwnerUnknown

log = logging.getLogger(__name__)

FORWARDED = "X-Streamapp-Forwarded"
#: Names the worker that read the table: for operators, and to test forwarding.
SERVED_BY = "X-Streamapp-Served-By"
_PASSED_HEADERS = ("Authorization", "Accept", "Content-Type", "Idempotency-Key")

#: Builds the answer from this worker's own store (raises ApiError for 403/404).
ReadLocally = Callable[[], Awaitable[web.Response]]


class OwnerRouter:
    def __init__(self, ownership: Ownership, partitions: int) -> None:
        self.ownership = ownership
        self.partitions = partitions
        self.self_url = ownership.self_url
        self._session: aiohttp.ClientSession | None = None

    def partition(self, key: bytes) -> int:
        """A recipient key's partition, computed like the writers compute it (not through the
        producer's metadata, which may not know the changelog topic yet)."""
        return partition_for(key, self.partitions)

    def owner_of_partition(self, table: str, partition: int) -> URL | None:
        """The URL of the worker owning `partition` of `table`, or None when it is this worker."""
        try:
            return self.ownership.owner_of(table, partition)
        except OwnerUnknown as exc:
            raise unavailable(str(exc)) from None

    async def serve(
        self, request: web.Request, table: str, partition: int, read: ReadLocally, body: bytes | None = None
    ) -> web.Response:
        """Forward to the owner of `partition` (with `body`, when the request's was read already), or
        answer from this worker's store."""
        owner = self.owner_of_partition(table, partition)
        if owner is not None:
            return await self.forward(request, owner, body=body)
        return self.served_here(await read())

    async def serve_key(self, request: web.Request, table: str, key: bytes, read: ReadLocally) -> web.Response:
        """`serve` for the partition of a recipient key."""
        return await self.serve(request, table, self.partition(key), read)

    async def forward(self, request: web.Request, owner: URL, body: bytes | None = None) -> web.Response:
        """Replay the request (with `body`, already read) on the owner; a forwarded request is never forwarded again."""
        if request.headers.get(FORWARDED):
            raise unavailable("ownership is moving between workers")
        headers = {h: request.headers[h] for h in _PASSED_HEADERS if h in request.headers}
        headers[FORWARDED] = "1"
        target = owner.with_path(request.rel_url.raw_path, encoded=True).with_query(request.rel_url.query)
        try:
            async with self.session.request(request.method, target, headers=headers, data=body) as reply:
                body = await reply.read()
                headers = {SERVED_BY: reply.headers.get(SERVED_BY, str(owner))}
                if "Idempotent-Replayed" in reply.headers:
                    headers["Idempotent-Replayed"] = reply.headers["Idempotent-Replayed"]
                return web.Response(body=body, status=reply.status, content_type=reply.content_type, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding to %s failed: %s", owner, exc)
            raise unavailable("owner of this recipient is unreachable") from None

    def served_here(self, response: web.Response) -> web.Response:
        response.headers[SERVED_BY] = str(self.self_url)
        return response

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
