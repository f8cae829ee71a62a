"""`GET /api/v1/batches/{batchId}` (scope `send`): what a batch accepted and where its messages are.

The BatchInfo lives in the `batches` partition the id names; the request goes to that
partition's owner, which adds up the batch's counts of every `messages` partition: its own from
the ledger's per-batch counters (one read a partition, streamapp.sending.ledger), the others' by
asking their owners with `?partitions=` (same token; a checked list, parse_partitions). `queued`
is what has no ledger row yet; the counts converge to the total as messages are sent.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable

import aiohttp
from aiohttp import web
from yarl import URL

from streamapp.core.ids import batch_partition
from streamapp.core.models import MESSAGE_STATUSES, decode_batch_info
from streamapp.core.validation import FieldError
from streamapp.http.auth import Authenticator, require_database
from streamapp.http.errors import json_response, not_found, unavailable, unprocessable
from streamapp.http.forwarding import OwnerRouter
from streamapp.kafka.store import Store
from streamapp.runtime import Sending
from streamapp.sending.ledger import Ledger
from streamapp.settings import Settings
from streamapp.tables.batches import BATCHES
from streamapp.tables.messages import MESSAGES

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

    async def get_batch(self, request: web.Request) -> web.Response:
        token = self.auth.require(request, "send")
        batch_id = request.match_info["batchId"]
        partition = batch_partition(batch_id)
        if partition is None or partition >= self.partitions:
            raise not_found(f"batch {batch_id!r}")
        if "partitions" in request.query:  # another worker asks for the counts of its partitions
            counts = self._local_counts(batch_id, self._partitions(request), token.allows_database)
            return json_response({"counts": counts})

        async def read() -> web.Response:
            raw = self.batches.get(partition, batch_id.encode())
            if raw is None:
                raise not_found(f"batch {batch_id!r} (or it is still being accepted)")
            info = decode_batch_info(raw)
            require_database(token, info.database)
            counts = await self._counts(request, batch_id, token.allows_database)
            view = info.public()
            processed = sum(counts.values())
            view.update({"queued": max(0, info.total - processed), **{s: counts.get(s, 0) for s in STATUSES}})
            return json_response(view)

        return await self.owners.serve(request, BATCHES, partition, read)

    def _partitions(self, request: web.Request) -> list[int]:
        """`?partitions=0,3,5`: distinct partition numbers, at most one of each partition; else 422."""
        return parse_partitions(request.query.getall("partitions"), self.partitions)

    def _local_counts(self, batch_id: str, partitions: list[int], allowed: Callable[[str], bool]) -> dict[str, int]:
        """Counts of this worker's partitions, of rows the token may see (a token limited to other
        databases asking with `?partitions=` directly learns nothing)."""
        counts: Counter[str] = Counter()
        for partition in partitions:
            if self.owners.owner_of_partition(MESSAGES, partition) is not None:
                raise unavailable(f"partition {partition} moved")
            counts.update(self.ledger.count_batch(partition, batch_id, allowed))
        return dict(counts)

    async def _counts(self, request: web.Request, batch_id: str, allowed: Callable[[str], bool]) -> Counter[str]:
        remote: dict[URL, list[int]] = defaultdict(list)
        local: list[int] = []
        for partition in range(self.partitions):
            owner = self.owners.owner_of_partition(MESSAGES, partition)
            if owner is None:
                local.append(partition)
            else:
                remote[owner].append(partition)
        counts = Counter(self._local_counts(batch_id, local, allowed))
        answers = await asyncio.gather(*(self._ask(request, url, batch_id, ps) for url, ps in remote.items()))
        for answer in answers:
            counts.update(answer)
        return counts

    async def _ask(self, request: web.Request, owner: URL, batch_id: str, partitions: list[int]) -> dict[str, int]:
        url = owner.with_path(f"/api/v1/batches/{batch_id}").with_query(partitions=",".join(map(str, partitions)))
        headers = self.owners.signed_headers("GET", url, {"Authorization": request.headers.get("Authorization", "")})
        try:
            async with self.owners.session.get(url, headers=headers) as reply:
                if reply.status != 200:
                    raise unavailable(f"counts of partitions {partitions} not available ({reply.status})")
                body = await reply.json()
                return dict(body["counts"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(f"owner of partitions {partitions} unreachable: {exc}") from None


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
