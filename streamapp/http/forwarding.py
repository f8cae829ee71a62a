"""Serving reads from any worker: find the worker that owns a key, forward if not us.

A table partition lives on one worker; Faust's partition assignor tells every
member which worker (by its advertised URL) owns which partition.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from yarl import URL

from streamapp.core.keys import partition_for
from streamapp.http.errors import unavailable
from streamapp.runtime import StreamApp

log = logging.getLogger(__name__)

FORWARDED = "X-Streamapp-Forwarded"
#: Names the worker that read the table: for operators, and to test forwarding.
SERVED_BY = "X-Streamapp-Served-By"
_PASSED_HEADERS = ("Authorization", "Accept", "Content-Type", "Idempotency-Key")


class OwnerRouter:
    def __init__(self, sa: StreamApp) -> None:
        self.sa = sa
        self.self_url = URL(sa.settings.service.advertised_url)
        self._session: aiohttp.ClientSession | None = None

    def owner(self, table: str, key: bytes) -> URL | None:
        """The URL of the worker owning `key`, or None when it is this worker (503 when unknown).

        The partition is computed like the writers compute it (not through the
        producer's metadata, which may not know the changelog topic yet).
        """
        return self.owner_of_partition(table, partition_for(key, self.sa.settings.service.partitions))

    def owner_of_partition(self, table: str, partition: int) -> URL | None:
        """The URL of the worker owning `partition` of `table`, or None when it is this worker."""
        if not self.sa.is_ready():
            raise unavailable("worker is starting or rebalancing")
        changelog = self.sa.faust.tables[table].changelog_topic.get_topic_name()
        for url, topics in self.sa.faust.assignor.changelog_distribution.items():
            if partition in topics.get(changelog, ()):
                owner = URL(url)
                return None if (owner.host, owner.port) == (self.self_url.host, self.self_url.port) else owner
        raise unavailable("partition assignment not known yet")

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
