"""`GET /api/v1/batches/{batchId}` (scope `send`): what a batch accepted and where its messages are.

The BatchInfo lives in the `batches` partition the id names; the request goes to that
partition's owner, which adds up the batch's counts of every `messages` partition: its own from
the ledger's per-batch counters (one read a partition, streamapp.sending.ledger), the others' by
asking their owners with `?partitions=` (same token; a checked list, parse_partitions). `queued`
is what has no ledger row yet; the counts converge to the total as messages are sent.

`POST /api/v1/batches/{batchId}/cancel` (CancelRoutes) goes the same way: to the batch's owner, then
to every `messages` partition's owner (streamapp.sending.cancel).

A batch id is answered from its 202 on: the BatchInfo reaches the table through the commands
topic, so it may be read a moment after the client has the id (longer behind an import). The
owner waits for the row of an id made in the last RECENT seconds, up to ACCEPT_WAIT, before its
404 (batch_row).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from streamapp.core.ids import batch_partition, batch_time
from streamapp.core.models import MESSAGE_STATUSES, decode_batch_info
from streamapp.core.validation import FieldError
from streamapp.http.auth import Authenticator, require_database
from streamapp.http.errors import ApiError, json_response, not_found, unavailable, unprocessable
from streamapp.http.forwarding import OWNER_PATIENCE, RETRY_FIRST, RETRY_MAX, OwnerRouter
from streamapp.http.signatures import FORWARDED
from streamapp.kafka.store import Store
from streamapp.runtime import Sending
from streamapp.sending.audience import progress
from streamapp.sending.ledger import Ledger
from streamapp.settings import Settings
from streamapp.tables.batches import BATCHES
from streamapp.tables.messages import MESSAGES

#: Ids made this recently (seconds) whose BatchInfo is not read yet are waited for, up to ACCEPT_WAIT.
RECENT = 600.0
ACCEPT_WAIT = 10.0
POLL = 0.05


async def batch_row(get: Callable[[int, bytes], bytes | None], partition: int, batch_id: str) -> bytes | None:
    """The batch's BatchInfo row (`get` reads the table), waited for while the id is young: its 202 may
    precede the table's write."""
    raw = get(partition, batch_id.encode())
    made = batch_time(batch_id)
    if raw is not None or made is None or time.time() - made > RECENT:
        return raw
    deadline = time.monotonic() + ACCEPT_WAIT
    while raw is None and time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        raw = get(partition, batch_id.encode())
    return raw


#: Counted from ledger rows; `queued` is what has no row yet.
STATUSES = tuple(s for s in MESSAGE_STATUSES if s != "queued")


class BatchRoutes:
    def __init__(
        self, settings: Settings, batches: Store, sending: Sending, auth: Authenticator, owners: OwnerRouter
    ) -> None:
        self.partitions = settings.service.partitions
        self.batches = batches
        self.auth = auth
        self.owners = owners
        self.ledger = Ledger(sending.messages)
        self.audience = AudienceProgress(sending.messages, owners, self.partitions)

    async def get_batch(self, request: web.Request) -> web.Response:
        token = self.auth.require(request, "send")
        batch_id = request.match_info["batchId"]
        partition = batch_partition(batch_id)
        if partition is None or partition >= self.partitions:
            raise not_found(f"batch {batch_id!r}")
        if "partitions" in request.query and "audience" in request.query:  # an audience's progress, likewise
            if FORWARDED not in request.headers:
                raise unprocessable([FieldError("/query/audience", "only workers ask for an audience's progress")])
            return json_response(self.audience.local(batch_id, self._partitions(request)))
        if "partitions" in request.query:  # another worker asks for the counts of its partitions
            counts, engaged = self._local_counts(batch_id, self._partitions(request), token.allows_database)
            return json_response({"counts": counts, "engaged": engaged})

        async def read() -> web.Response:
            raw = await batch_row(self.batches.get, partition, batch_id)
            if raw is None:
                raise not_found(f"batch {batch_id!r} (or it is still being accepted)")
            info = decode_batch_info(raw)
            require_database(token, info.database)
            counts, engaged = await self._counts(request, batch_id, token.allows_database)
            view = info.public()
            processed = sum(counts.values())
            view.update({"queued": max(0, info.total - processed), **{s: counts.get(s, 0) for s in STATUSES}})
            view.update(engagement_counts(counts, engaged))
            if info.segment is not None:
                view.update(await self.audience.view(request, batch_id, view))
            return json_response(view)

        return await self.owners.serve(request, BATCHES, partition, read)

    def _partitions(self, request: web.Request) -> list[int]:
        """`?partitions=0,3,5`: distinct partition numbers, at most one of each partition; else 422."""
        return parse_partitions(request.query.getall("partitions"), self.partitions)

    def _local_counts(
        self, batch_id: str, partitions: list[int], allowed: Callable[[str], bool]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Counts of this worker's partitions by status and by engagement mark, of rows the token may see
        (a token limited to other databases asking with `?partitions=` directly learns nothing)."""
        counts: Counter[str] = Counter()
        engaged: Counter[str] = Counter()
        self.owners.require_owned(MESSAGES, partitions)
        for partition in partitions:
            counts.update(self.ledger.count_batch(partition, batch_id, allowed))
            engaged.update(self.ledger.engaged_batch(partition, batch_id, allowed))
        return dict(counts), dict(engaged)

    async def _counts(
        self, request: web.Request, batch_id: str, allowed: Callable[[str], bool]
    ) -> tuple[Counter[str], Counter[str]]:
        local, remote = self.owners.split(MESSAGES)
        mine, marks = self._local_counts(batch_id, local, allowed)
        counts, engaged = Counter(mine), Counter(marks)
        answers = await asyncio.gather(*(self._ask(request, url, batch_id, ps) for url, ps in remote.items()))
        for answer in answers:
            counts.update(answer.get("counts", {}))
            engaged.update(answer.get("engaged", {}))
        return counts, engaged

    async def _ask(
        self, request: web.Request, owner: URL, batch_id: str, partitions: list[int]
    ) -> dict[str, dict[str, int]]:
        url = owner.with_path(f"/api/v1/batches/{batch_id}").with_query(partitions=",".join(map(str, partitions)))
        headers = self.owners.signed_headers("GET", url, {"Authorization": request.headers.get("Authorization", "")})
        try:
            async with self.owners.session.get(url, headers=headers) as reply:
                if reply.status != 200:
                    raise unavailable(f"counts of partitions {partitions} not available ({reply.status})")
                body = await reply.json()
                return {"counts": dict(body["counts"]), "engaged": dict(body.get("engaged", {}))}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(f"owner of partitions {partitions} unreachable: {exc}") from None


def engagement_counts(counts: Counter[str], engaged: Counter[str]) -> dict[str, int]:
    """The batch status's engagement keys (SPEC §4, §8): unique human opens and unique clicks, messages
    delivered (accepted by the relay), complaints and unsubscribes, each once per message."""
    return {
        "delivered": counts.get("sent", 0),
        "opened": engaged.get("opened", 0),
        "clicked": engaged.get("clicked", 0),
        "complained": engaged.get("complained", 0),
        "unsubscribed": engaged.get("unsubscribed", 0),
    }


def parse_partitions(values: list[str], partitions: int) -> list[int]:
    """The partitions a worker is asked to count: decimal numbers below `partitions`, each once.

    The text is bounded before it is split (5 characters a partition, a comma each), so a query of
    4,000 zeros is a quick 422, never a loop over what it repeats.
    """
    where = "/query/partitions"
    if len(values) != 1 or len(values[0]) > 6 * partitions:
        raise unprocessable([FieldError(where, f"must be one list of at most {partitions} partition numbers")])
    parts = values[0].split(",")
    if any(not p.isdecimal() or not p.isascii() or len(p) > 5 for p in parts):
        raise unprocessable([FieldError(where, "must be partition numbers separated by commas")])
    wanted = [int(p) for p in parts]
    if bad := [p for p in wanted if p >= partitions]:
        raise unprocessable([FieldError(where, f"partition {bad[0]} does not exist (there are {partitions})")])
    if len(set(wanted)) != len(wanted):
        raise unprocessable([FieldError(where, "names a partition more than once")])
    return wanted


class CancelRoutes:
    """`POST /api/v1/batches/{batchId}/cancel` (scope `send`): the batch's owner checks it exists and the token
    may use its database, then has every `messages` partition's owner write the cancel marker
    (streamapp.sending.cancel): its own directly, the others' by a signed `?partitions=` request. The answer
    (202) comes once every partition has it durably; a partition whose owner does not answer within
    OWNER_PATIENCE makes it a 503, and the cancel holds where it was written (a retry completes it)."""

    def __init__(
        self, settings: Settings, batches: Store, sending: Sending, auth: Authenticator, owners: OwnerRouter
    ) -> None:
        self.partitions = settings.service.partitions
        self.batches = batches
        self.auth = auth
        self.owners = owners
        self.cancels = sending.engine.cancels

    async def cancel_batch(self, request: web.Request) -> web.Response:
        token = self.auth.require(request, "send")
        batch_id = request.match_info["batchId"]
        partition = batch_partition(batch_id)
        if partition is None or partition >= self.partitions:
            raise not_found(f"batch {batch_id!r}")
        if "partitions" in request.query:  # the batch's owner asks for its partitions
            if FORWARDED not in request.headers:
                raise unprocessable([FieldError("/query/partitions", "only workers name partitions")])
            await self._cancel_here(batch_id, parse_partitions(request.query.getall("partitions"), self.partitions))
            return json_response(cancelled_answer(batch_id), status=202)

        async def cancel() -> web.Response:
            raw = await batch_row(self.batches.get, partition, batch_id)
            if raw is None:
                raise not_found(f"batch {batch_id!r} (or it is still being accepted)")
            require_database(token, decode_batch_info(raw).database)
            await self._cancel_everywhere(request, batch_id)
            return json_response(cancelled_answer(batch_id), status=202)

        return await self.owners.serve(request, BATCHES, partition, cancel)

    async def _cancel_here(self, batch_id: str, partitions: list[int]) -> None:
        """Write the marker in partitions this worker owns; 503 for one that is not (or no longer) its own."""
        self.owners.require_owned(MESSAGES, partitions)
        await asyncio.gather(*(self.cancels.cancel(p, batch_id) for p in partitions))
        # moved while written: the new owner may not have read the marker
        self.owners.require_owned(MESSAGES, partitions, "moved while the batch was cancelled")

    async def _cancel_everywhere(self, request: web.Request, batch_id: str) -> None:
        """Every partition, each by its owner; those not reached are tried again until OWNER_PATIENCE."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + OWNER_PATIENCE, RETRY_FIRST
        pending = set(range(self.partitions))
        while True:
            pending -= await self._cancel_round(request, batch_id, sorted(pending))
            if not pending:
                return
            if loop.time() + pause > deadline:
                raise unavailable(f"partitions {sorted(pending)} not reached (the others are cancelled); retry")
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_MAX)

    async def _cancel_round(self, request: web.Request, batch_id: str, partitions: list[int]) -> set[int]:
        """One attempt at each owner: the partitions done."""
        by_owner: dict[URL | None, list[int]] = defaultdict(list)
        for partition in partitions:
            with contextlib.suppress(ApiError):  # no owner known now: next round
                by_owner[self.owners.owner_of_partition(MESSAGES, partition)].append(partition)
        attempts = [self._attempt(request, owner, batch_id, ps) for owner, ps in by_owner.items()]
        done: set[int] = set()
        for ps in await asyncio.gather(*attempts):
            done.update(ps)
        return done

    async def _attempt(
        self, request: web.Request, owner: URL | None, batch_id: str, partitions: list[int]
    ) -> list[int]:
        try:
            if owner is None:
                await self._cancel_here(batch_id, partitions)
            else:
                await self._ask(request, owner, batch_id, partitions)
        except ApiError as exc:
            if exc.status != 503:
                raise
            return []
        return partitions

    async def _ask(self, request: web.Request, owner: URL, batch_id: str, partitions: list[int]) -> None:
        query = {"partitions": ",".join(map(str, partitions))}
        url = owner.with_path(f"/api/v1/batches/{batch_id}/cancel").with_query(query)
        passed = {"Authorization": request.headers.get("Authorization", ""), "Content-Type": "application/json"}
        headers = self.owners.signed_headers("POST", url, passed)
        try:
            async with self.owners.session.post(url, headers=headers, data=b"") as reply:
                if reply.status != 202:
                    raise unavailable(f"partitions {partitions} not cancelled ({reply.status})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(f"owner of partitions {partitions} unreachable: {exc}") from None


def cancelled_answer(batch_id: str) -> dict[str, object]:
    """Nothing more of the batch is sent; its waiting messages become `failed` (reason `cancelled`)."""
    return {"batchId": batch_id, "cancelled": True}


class AudienceProgress:
    """An audience send's total (streamapp.sending.audience): `null`, with every count, until each partition's
    owner evaluated its members; then the sum of the rows they wrote. Asked like the counts (`?partitions=`,
    with `&audience=1`)."""

    def __init__(self, messages: Store, owners: OwnerRouter, partitions: int) -> None:
        self.messages = messages
        self.owners = owners
        self.partitions = partitions

    async def view(self, request: web.Request, batch_id: str, view: dict[str, Any]) -> dict[str, Any]:
        """What replaces the status's total and counts."""
        done, rows = await self._evaluated(request, batch_id)
        if done < self.partitions:
            return {"total": None, "queued": None, **dict.fromkeys(STATUSES)}
        return {"total": rows, "queued": max(0, rows - sum(view[s] for s in STATUSES))}

    def local(self, batch_id: str, partitions: list[int]) -> dict[str, int]:
        """Of this worker's partitions: how many evaluated the audience, and the rows they wrote."""
        done = rows = 0
        self.owners.require_owned(MESSAGES, partitions)
        for partition in partitions:
            finished, written = progress(self.messages, partition, batch_id)
            done, rows = done + finished, rows + written
        return {"done": done, "rows": rows}

    async def _evaluated(self, request: web.Request, batch_id: str) -> tuple[int, int]:
        local, remote = self.owners.split(MESSAGES)
        answers = [self.local(batch_id, local)]
        answers += await asyncio.gather(*(self._ask(request, url, batch_id, ps) for url, ps in remote.items()))
        return sum(a["done"] for a in answers), sum(a["rows"] for a in answers)

    async def _ask(self, request: web.Request, owner: URL, batch_id: str, partitions: list[int]) -> dict[str, int]:
        query = {"partitions": ",".join(map(str, partitions)), "audience": "1"}
        url = owner.with_path(f"/api/v1/batches/{batch_id}").with_query(query)
        headers = self.owners.signed_headers("GET", url, {"Authorization": request.headers.get("Authorization", "")})
        try:
            async with self.owners.session.get(url, headers=headers) as reply:
                if reply.status != 200:
                    raise unavailable(f"audience of partitions {partitions} not available ({reply.status})")
                body = await reply.json()
                return {"done": int(body["done"]), "rows": int(body["rows"])}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(f"owner of partitions {partitions} unreachable: {exc}") from None
