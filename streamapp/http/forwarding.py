"""Serving a request from any worker: find the worker that owns its partition, forward if not us.

A table partition lives on one worker (streamapp.kafka.ownership names it). A forwarded request
is signed (streamapp.http.signatures) and never forwarded again.

A read answers 503 with `Retry-After: 1` while ownership moves. A write that asks the owner (a
trigger message with an idempotency key: the owner checks and records the key) waits for one
instead, up to OWNER_PATIENCE: when a worker dies, its partitions have no live owner until the
group notices (the consumer session timeout) and a survivor has taken them over. If no owner
answers by then (a restarted worker may replay its changelogs for a minute and more), the write
goes on without it (`without_owner`): with one worker of two alive every write is accepted.
Forwarding such a write again is safe: its idempotency key makes a second arrival a replay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from streamapp.core.keys import partition_for
from streamapp.http.errors import unavailable
from streamapp.http.signatures import FORWARDED, PASSED_HEADERS, RequestSigner
from streamapp.kafka.ownership import Ownership, OwnerUnknown

log = logging.getLogger(__name__)

#: Names the worker that read the table: for operators, and to test forwarding.
SERVED_BY = "X-Streamapp-Served-By"
#: How long a write waits for a partition's owner before it goes on without it: the session timeout
#: that lets the group notice a dead worker (6 s), the rebalance and a survivor's short recovery.
OWNER_PATIENCE = 10.0
RETRY_FIRST, RETRY_MAX = 0.1, 1.0
_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=2)

#: Builds the answer from this worker's own store (raises ApiError for 403/404).
ReadLocally = Callable[[], Awaitable[web.Response]]


class OwnerUnavailable(Exception):
    """The owner did not answer (dead, or not ready yet), or this worker cannot forward again."""


class OwnerRouter:
    def __init__(self, ownership: Ownership, partitions: int, signer: RequestSigner) -> None:
        self.ownership = ownership
        self.partitions = partitions
        self.signer = signer
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

    def split(self, table: str) -> tuple[list[int], dict[URL, list[int]]]:
        """Every partition of `table`: this worker's, and the others' by owner (a scatter over the owners)."""
        local: list[int] = []
        remote: dict[URL, list[int]] = defaultdict(list)
        for partition in range(self.partitions):
            owner = self.owner_of_partition(table, partition)
            (local if owner is None else remote[owner]).append(partition)
        return local, remote

    def require_owned(self, table: str, partitions: list[int], what: str = "moved") -> None:
        """503 unless this worker owns each of `partitions` of `table` (a forwarded part of a scatter)."""
        for partition in partitions:
            if self.owner_of_partition(table, partition) is not None:
                raise unavailable(f"partition {partition} {what}")

    async def serve(
        self,
        request: web.Request,
        table: str,
        partition: int,
        read: ReadLocally,
        body: bytes | None = None,
        patience: float = 0.0,
        without_owner: Callable[[], Awaitable[web.Response]] | None = None,
    ) -> web.Response:
        """Answer from this worker's store, or forward to the owner of `partition` (with `body`, when the
        request's was read already); with `patience`, wait up to that many seconds for an owner that answers,
        then answer with `without_owner` if given (a request forwarded to this worker never does: its
        sender decides)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if FORWARDED in request.headers else patience)
        pause = RETRY_FIRST
        while True:
            try:
                owner = self.ownership.owner_of(table, partition)
                if owner is None:
                    return self.served_here(await read())
                return await self.forward(request, owner, body=body)
            except (OwnerUnknown, OwnerUnavailable) as exc:
                if loop.time() + pause > deadline:
                    if patience:
                        log.warning("no owner of %s partition %d answered within %.0f s: %s", table, partition,
                                    patience, exc)  # fmt: skip
                    if without_owner is not None and FORWARDED not in request.headers:
                        return await without_owner()
                    raise unavailable(str(exc)) from None
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_MAX)

    async def serve_key(self, request: web.Request, table: str, key: bytes, read: ReadLocally) -> web.Response:
        """`serve` for the partition of a recipient key."""
        return await self.serve(request, table, self.partition(key), read)

    async def forward(self, request: web.Request, owner: URL, body: bytes | None = None) -> web.Response:
        """Replay the request (with `body`, already read) on the owner, signed; raise OwnerUnavailable when
        the owner does not answer or answers that it is not ready (503)."""
        if FORWARDED in request.headers:
            raise OwnerUnavailable("ownership is moving between workers")
        target = owner.with_path(request.rel_url.raw_path, encoded=True).with_query(request.rel_url.query)
        passed = {h: request.headers[h] for h in PASSED_HEADERS if h in request.headers}
        if body or request.method in ("PATCH", "POST", "PUT"):  # aiohttp adds it unasked; the signature covers it
            passed.setdefault("Content-Type", "application/octet-stream")
        headers = self.signed_headers(request.method, target, passed, body or b"")
        try:
            async with self.session.request(request.method, target, headers=headers, data=body) as reply:
                answer = await reply.read()
                if reply.status == 503:
                    raise OwnerUnavailable("the owner of this partition is not ready")
                kept = {SERVED_BY: reply.headers.get(SERVED_BY, str(owner))}
                if "Idempotent-Replayed" in reply.headers:
                    kept["Idempotent-Replayed"] = reply.headers["Idempotent-Replayed"]
                return web.Response(body=answer, status=reply.status, content_type=reply.content_type, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("forwarding to %s failed: %r", owner, exc)
            raise OwnerUnavailable("the owner of this partition is unreachable") from None

    def signed_headers(self, method: str, target: URL, headers: dict[str, str], body: bytes = b"") -> dict[str, str]:
        """`headers` and the signature that makes the receiver take the request for a forwarded one."""
        return {**headers, FORWARDED: self.signer.sign(method, target.raw_path_qs, headers, body)}

    def served_here(self, response: web.Response) -> web.Response:
        response.headers[SERVED_BY] = str(self.self_url)
        return response

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
