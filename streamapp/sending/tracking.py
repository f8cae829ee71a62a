"""Open and click tracking (SPEC §8): which messages are tracked, and recording each hit once.

`TrackingPolicy` says what a message tracks: `[tracking] opens/clicks`, then `track` of its trigger
or campaign (a transactional trigger is off unless it says `track = true`).

`TrackingRecorder` runs on the worker that owns the message's ledger partition (the HTTP route
forwards a hit there, streamapp.http.routes.tracking). The route hands a hit over and answers at
once; the recorder takes the hits of LINGER_SECONDS together:

1. the ledger row says whether the message had that open or that URL's click already: a repeat
   publishes nothing (the common case of a reader opening a mail five times costs one read);
2. the history records of the others go out in one publish, on the recipient-commands topic, with
   ids derived from the type, the messageId and the URL's digest (or `machine`), so a record
   published twice (a crash, two hits at once) is stored once;
3. then each row gets its mark (`Ledger.engage`), which counts it in the batch and campaign
   counters exactly once: the counters follow the row's marks, never the number of hits.

An open within `[tracking] machine_seconds` (60) of delivery (the `sent` row's updatedAt, or the token's issue time)
or by a known prefetcher (streamapp.mail.prefetch) is a machine open: recorded with
`custom3 = "machine"` under its own id, counted as `machine`, not as `opened`; a reader's open later
is still recorded and counted. A hit of a partition whose owner is not known (a rebalance) records
its history at once and its mark once the owner is known (here, or passed on to it); a hit that
could not reach its owner records its history only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from streamapp import metrics
from streamapp.core import clock
from streamapp.core.engagement import MACHINE, MACHINE_FIELD, URL_FIELD, EngagementType, engagement
from streamapp.core.ids import partition_of
from streamapp.core.models import AppendHistory, MessageState, RecipientCommand, SendMessage
from streamapp.mail.tracking import TrackedMessage
from streamapp.sending.ledger import Ledger
from streamapp.settings import Settings

log = logging.getLogger(__name__)

Publish = Callable[[list[RecipientCommand]], Awaitable[None]]
HitKind = Literal["open", "click"]

LINGER_SECONDS = 0.05
MAX_HITS = 5000
#: Hits held at most (a burst beyond it, with Kafka out, is dropped and counted, never queued unbounded).
MAX_PENDING = 200_000
RETRY_SECONDS = 1.0
#: How long the marks of a partition without a known owner wait for one (a rebalance takes seconds).
MARK_PATIENCE = 120.0


@dataclass(frozen=True, slots=True)
class TrackingPolicy:
    """What each message tracks: `opens` and `clicks` of `[tracking]`, `track` of its trigger or campaign."""

    opens: bool
    clicks: bool
    triggers: frozenset[str]
    campaigns: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> TrackingPolicy:
        return cls(
            opens=settings.tracking.opens,
            clicks=settings.tracking.clicks,
            triggers=frozenset(t.name for t in settings.triggers.values() if t.track),
            campaigns=frozenset(c.name for c in settings.campaigns.values() if c.track),
        )

    @classmethod
    def off(cls) -> TrackingPolicy:
        return cls(False, False, frozenset(), frozenset())

    def for_message(self, command: SendMessage) -> tuple[bool, bool]:
        """(opens, clicks) of one message; a message without its trigger's or campaign's name tracks nothing."""
        if command.name is None or not (self.opens or self.clicks):
            return False, False
        names = self.campaigns if command.priority == "campaign" else self.triggers
        tracked = command.name in names
        return self.opens and tracked, self.clicks and tracked


def url_digest(url: str) -> str:
    """A clicked URL's short name, in its record id and its ledger row (64 bits: no two links of a mail collide)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Hit:
    """One request for a pixel or a link of a genuine token; `prefetcher`: by a known mail-privacy proxy."""

    kind: HitKind
    message: TrackedMessage
    issued: int
    url: str | None = None
    prefetcher: bool = False
    at: float = field(default_factory=time.time)
    #: The request's path, to pass the hit to the partition's owner (`relay`); `relayed`: it was, or could
    #: not be, so it is never passed on again (no ping-pong while ownership moves).
    path: str = ""
    relayed: bool = False


#: Where a ledger partition is: owned by this worker, by another, or not known now (a rebalance).
Place = Literal["here", "elsewhere", "unknown"]


@dataclass(frozen=True, slots=True)
class _Pending:
    hit: Hit
    partition: int
    place: Place
    mark: str
    digest: str | None


class TrackingRecorder:
    """`add(hit)`: recorded soon, with others (see the module)."""

    def __init__(
        self,
        ledger: Ledger,
        publish: Publish,
        where: Callable[[int], Place],
        relay: Callable[[Hit], None] | None = None,
        machine_seconds: float = 60.0,
        linger: float = LINGER_SECONDS,
        max_hits: int = MAX_HITS,
        retry: float = RETRY_SECONDS,
    ) -> None:
        self._ledger = ledger
        self._publish = publish
        self._where = where
        self._relay = relay
        self._machine_seconds = machine_seconds
        self._linger = linger
        self._max_hits = max_hits
        self._retry = retry
        self._waiting: list[Hit] = []
        self._held = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def add(self, hit: Hit) -> None:
        if self._held >= MAX_PENDING:
            metrics.TRACKING_HITS.labels(kind=hit.kind, outcome="dropped").inc()
            return
        self._waiting.append(hit)
        self._held += 1
        if len(self._waiting) >= self._max_hits:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._start)

    async def drain(self) -> None:
        """Record what waits now (tests, shutdown)."""
        self._start()
        while self._running:
            await asyncio.gather(*self._running)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._waiting = self._waiting, []
        if group:
            self._track(self._record(group))

    async def _record(self, hits: list[Hit]) -> None:
        try:
            pending = self._new(hits)
            await self._published(pending)
            await asyncio.gather(*(self._mark(p) for p in pending if p.place == "here"))
            if unknown := [p for p in pending if p.place == "unknown"]:
                self._track(self._later(unknown))
        except Exception:
            log.exception("tracking: %d hit(s) not recorded", len(hits))
        finally:
            self._held -= len(hits)

    def _new(self, hits: list[Hit]) -> list[_Pending]:
        """The hits whose mark the message's row lacks (or whose row is not here), one of each; hits of a
        partition another worker owns go to it (`relay`)."""
        found: dict[tuple[str, str, str | None], _Pending] = {}
        for hit in hits:
            partition = partition_of(hit.message.message_id)
            if partition is None:
                continue
            place = self._where(partition)
            if place == "elsewhere" and self._relay is not None and not hit.relayed:
                self._relay(hit)
                continue
            state = self._ledger.get(partition, hit.message.message_id) if place == "here" else None
            mark, digest = self._classify(hit, state)
            key = (hit.message.message_id, mark, digest)
            if key in found or _seen(state, mark, digest):
                metrics.TRACKING_HITS.labels(kind=hit.kind, outcome="repeat").inc()
                continue
            found[key] = _Pending(hit, partition, place, mark, digest)
        return list(found.values())

    async def _later(self, pending: list[_Pending]) -> None:
        """Marks of partitions whose owner was not known (a rebalance): counted once it is this worker,
        passed to the owner once it is another, given up after MARK_PATIENCE seconds."""
        deadline = time.monotonic() + MARK_PATIENCE
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(self._retry)
            waiting = []
            for p in pending:
                place = self._where(p.partition)
                if place == "here":
                    await self._mark(p)
                elif place == "elsewhere" and self._relay is not None and not p.hit.relayed:
                    self._relay(p.hit)  # the owner publishes the record again (stored once) and counts it
                elif place == "unknown":
                    waiting.append(p)
            pending = waiting
        if pending:
            log.warning("tracking: %d hit(s) recorded without counting: no owner of their partitions", len(pending))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._running.discard)

    def _classify(self, hit: Hit, state: MessageState | None) -> tuple[str, str | None]:
        if hit.kind == "click":
            return "clicked", url_digest(hit.url or "")
        delivered = clock.parse_time(state.updatedAt).timestamp() if state and state.status == "sent" else hit.issued
        machine = hit.prefetcher or hit.at - delivered < self._machine_seconds
        return ("machine" if machine else "opened"), None

    async def _published(self, pending: list[_Pending]) -> None:
        """Publish the history records, retried until Kafka takes them (the hits stay held meanwhile)."""
        if not pending:
            return
        commands = [_history(p) for p in pending]
        while True:
            try:
                await self._publish(commands)
                break
            except Exception:
                log.exception("tracking: history of %d hit(s) not published: retrying", len(commands))
                await asyncio.sleep(self._retry)
        for p in pending:
            metrics.TRACKING_HITS.labels(kind=p.hit.kind, outcome=p.mark).inc()

    async def _mark(self, pending: _Pending) -> None:
        await self._ledger.engage(pending.partition, pending.hit.message.message_id, pending.mark, pending.digest)


def _seen(state: MessageState | None, mark: str, digest: str | None) -> bool:
    if state is None:
        return False
    return digest in state.clicks if digest is not None else mark in state.engaged


def _history(pending: _Pending) -> RecipientCommand:
    hit, message = pending.hit, pending.hit.message
    at = clock.iso(datetime.fromtimestamp(hit.at, UTC))

    def record(kind: EngagementType, detail: str | None = None, fields: dict[str, str] | None = None) -> AppendHistory:
        return engagement(kind, database=message.database, original_id=message.original_id,
                          message_id=message.message_id, name=message.name or None, at=at, detail=detail,
                          fields=fields)  # fmt: skip

    if hit.kind == "click":
        return record("mail.clicked", pending.digest, {URL_FIELD: hit.url or ""})
    if pending.mark == "machine":
        return record("mail.opened", MACHINE, {MACHINE_FIELD: MACHINE})
    return record("mail.opened")
