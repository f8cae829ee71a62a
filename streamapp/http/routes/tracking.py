"""`GET /t/o/{token}` (the open pixel) and `GET /t/c/{token}` (a link's redirect), SPEC §8.

No authentication: the signed token is the authority (streamapp.mail.tracking). A forged, altered,
truncated or unsigned token is a 404 and records nothing, and a redirect goes only to the URL the
token was signed with, so these routes can never send a reader anywhere else (no open redirect).

The answer never waits for Kafka nor for another worker: the handler checks the token, hands the
hit over and answers (a 42-byte GIF with `Cache-Control: no-store`, or a 302). Recording happens
on the worker that owns the message's ledger partition (streamapp.sending.tracking): a hit that
arrives elsewhere is passed to that worker in the background (`_Forwarder`: a signed GET of the same
path, at most FORWARDERS at a time, the request's prefetcher verdict in `?prefetcher=1`, which only
a signed request may carry). Should the owner be unknown or unreachable, the hit records its
history here without counting, rather than wait.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging

import aiohttp
from aiohttp import web
from yarl import URL

from streamapp.core.ids import partition_of
from streamapp.http.forwarding import OwnerRouter
from streamapp.http.signatures import FORWARDED
from streamapp.kafka.ownership import OwnerUnknown
from streamapp.mail.prefetch import client_addresses, is_prefetcher
from streamapp.mail.tracking import Kind, TrackingTarget, read_token
from streamapp.runtime import Sending, StreamApp
from streamapp.sending.tracking import Hit, Place, TrackingRecorder
from streamapp.settings import KeyRing
from streamapp.tables.messages import MESSAGES

log = logging.getLogger(__name__)

#: The transparent 1x1 GIF (42 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}
#: Hits forwarded to owners at once; more wait in a queue of at most FORWARD_QUEUE (then: recorded here).
FORWARDERS = 16
FORWARD_QUEUE = 50_000
_FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=5, sock_connect=1)
PREFETCHER = "prefetcher"


class TrackingRoutes:
    def __init__(self, sa: StreamApp, sending: Sending, owners: OwnerRouter, keys: KeyRing) -> None:
        self.keys = keys
        self.owners = owners
        machine = sa.settings.tracking.machine_seconds
        ledger, publish = sending.engine.ledger, sa.publisher.publish
        self.recorder = TrackingRecorder(ledger, publish, self._where, self._relay, machine)
        self.forwarder = _Forwarder(owners, self.recorder)

    async def open_pixel(self, request: web.Request) -> web.Response:
        self._hit(request, self._target(request, "open"))
        return web.Response(body=PIXEL, content_type="image/gif", headers=NO_STORE)

    async def click(self, request: web.Request) -> web.Response:
        target = self._target(request, "click")
        self._hit(request, target)
        url = target.url or ""
        location = url if url.isascii() else str(URL(url))
        return web.Response(status=302, headers={"Location": location, **NO_STORE})

    def _target(self, request: web.Request, kind: Kind) -> TrackingTarget:
        target = read_token(self.keys, kind, request.match_info["token"])
        if target is None:
            raise web.HTTPNotFound(text="unknown link")
        return target

    def _hit(self, request: web.Request, target: TrackingTarget) -> None:
        """Hand the hit to the recorder here, or to the owner of its ledger partition: never waits."""
        forwarded = FORWARDED in request.headers  # the middleware checked its signature
        if forwarded:
            prefetcher = request.query.get(PREFETCHER) == "1"
        else:
            addresses = client_addresses(request.headers.get("X-Forwarded-For"), request.remote)
            prefetcher = is_prefetcher(request.headers.get("User-Agent"), addresses)
        hit = Hit(target.kind, target.message, target.issued, target.url, prefetcher, path=request.rel_url.raw_path,
                  relayed=forwarded)  # fmt: skip
        partition = partition_of(target.message.message_id)
        owner = self._owner(partition) if partition is not None and not forwarded else None
        if owner is None:
            self.recorder.add(hit)  # here, or the owner is not known yet: the recorder waits for one
        else:
            self.forwarder.add(owner, hit)

    def _owner(self, partition: int) -> URL | None:
        try:
            return self.owners.ownership.owner_of(MESSAGES, partition)
        except OwnerUnknown:
            return None

    def _where(self, partition: int) -> Place:
        try:
            return "here" if self.owners.ownership.owner_of(MESSAGES, partition) is None else "elsewhere"
        except OwnerUnknown:
            return "unknown"

    def _relay(self, hit: Hit) -> None:
        partition = partition_of(hit.message.message_id)
        owner = self._owner(partition) if partition is not None else None
        if owner is not None:
            self.forwarder.add(owner, hit)


class _Forwarder:
    """Passes hits to the owners of their partitions in the background, FORWARDERS at a time."""

    def __init__(self, owners: OwnerRouter, fallback: TrackingRecorder) -> None:
        self.owners = owners
        self.fallback = fallback
        self.queue: asyncio.Queue[tuple[URL, Hit]] = asyncio.Queue(FORWARD_QUEUE)
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, owner: URL, hit: Hit) -> None:
        try:
            self.queue.put_nowait((owner, hit))
        except asyncio.QueueFull:
            self.fallback.add(dataclasses.replace(hit, relayed=True))
            return
        if len(self.tasks) < FORWARDERS:
            task = asyncio.create_task(self._run())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self) -> None:
        while not self.queue.empty():
            owner, hit = self.queue.get_nowait()
            if not await self._forward(owner, hit):
                self.fallback.add(dataclasses.replace(hit, relayed=True))  # its history at least

    async def _forward(self, owner: URL, hit: Hit) -> bool:
        url = owner.with_path(hit.path, encoded=True)
        if hit.prefetcher:
            url = url.with_query({PREFETCHER: "1"})
        headers = self.owners.signed_headers("GET", url, {})
        try:
            session = self.owners.session  # closed with the server
            async with session.get(url, headers=headers, allow_redirects=False, timeout=_FORWARD_TIMEOUT) as reply:
                await reply.read()
                return reply.status in (200, 302)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("tracking hit not forwarded to %s: %r", owner, exc)
            return False
