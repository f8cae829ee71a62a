"""Segment routes (SPEC §4, §9): definitions, counts, members, a recipient's segments, previews.

Definitions come from this worker's catalog (configuration + the definitions topic, every worker
the same). A PUT or DELETE produces its record and answers once this worker applied it
(streamapp.kafka.catalog_topic.CatalogWriter), so a GET on the same worker sees it at once, and the
other workers within about 100 ms.

Counts and members live with the partitions (streamapp.segments.partition), on the workers that
hold them: a count adds up this worker's partitions and asks each other owner for its own, with
`?partitions=` (as batch counts do), so it is exact and current (no cache in between: a change is
visible as soon as the agent applied it). Members are paged in partition order, then originalId
order; a page ends where the next partition lives on another worker, and its cursor names that
partition, so the next request is forwarded to the owner (streamapp.http.forwarding). A preview
evaluates the body over every partition the same way, each owner its own, with the body sent along.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from yarl import URL

from streamapp.core.keys import recipient_key
from streamapp.core.validation import FieldError, check_original_id
from streamapp.http.auth import Authenticator, require_database
from streamapp.http.bodies import read_json
from streamapp.http.errors import ApiError, json_response, not_found, unavailable, unprocessable
from streamapp.http.forwarding import OwnerRouter
from streamapp.http.routes.batches import parse_partitions
from streamapp.http.signatures import FORWARDED
from streamapp.runtime import StreamApp
from streamapp.segments import catalog as errors
from streamapp.segments.catalog import SegmentEntry
from streamapp.segments.preview import SAMPLE, preview_partition
from streamapp.sending.audience import Audiences
from streamapp.tables.messages import MESSAGES
from streamapp.tables.segments import SEGMENTS

MAX_MEMBERS = 10_000
DEFAULT_MEMBERS = 1_000
_CURSOR = re.compile(r"^([0-9]{1,5})(?::([A-Za-z0-9_-]{0,2000}))?$")

Counts = dict[str, int | None]


class SegmentRoutes:
    def __init__(
        self, sa: StreamApp, auth: Authenticator, owners: OwnerRouter, audiences: Audiences | None = None
    ) -> None:
        self.sa = sa
        #: Scheduled audience sends (streamapp.sending.audience): a segment one of them waits for is not deleted.
        self.audiences = audiences
        self.engine = sa.segments
        self.catalog = sa.segments.catalog
        self.partitions = sa.settings.service.partitions
        self.limit = sa.settings.service.max_body_bytes
        self.auth = auth
        self.owners = owners

    def _database(self, request: web.Request, scope: str) -> str:
        token = self.auth.require(request, scope)
        name = request.match_info["db"]
        if name not in self.sa.settings.databases:
            raise not_found(f"database {name!r}")
        require_database(token, name)
        return name

    def _entry(self, database: str, name: str) -> SegmentEntry:
        try:
            return self.catalog.get(database, name)
        except errors.UnknownSegment:
            raise not_found(f"segment {name!r} in database {database!r}") from None

    # -- definitions ---------------------------------------------------------------------------

    async def list_segments(self, request: web.Request) -> web.Response:
        database = self._database(request, "recipients:read")
        if "partitions" in request.query:  # another worker asks for the counts of its partitions
            wanted = parse_partitions(request.query.getall("partitions"), self.partitions)
            return json_response({"counts": self._local_counts(database, wanted)})
        counts = await self._counts(request, database)
        return json_response({"segments": [_info(e, counts.get(e.name)) for e in self.catalog.segments(database)]})

    async def get_segment(self, request: web.Request) -> web.Response:
        database = self._database(request, "recipients:read")
        if "partitions" in request.query and "uses" in request.query:  # the deleting worker asks (delete_segment)
            if FORWARDED not in request.headers:
                raise unprocessable([FieldError("/query/uses", "only workers ask whether a send uses a segment")])
            wanted = parse_partitions(request.query.getall("partitions"), self.partitions)
            return json_response({"used": self._used_here(database, request.match_info["segment"], wanted)})
        entry = self._entry(database, request.match_info["segment"])
        counts = await self._counts(request, database)
        return json_response(_info(entry, counts.get(entry.name)))

    async def put_segment(self, request: web.Request) -> web.Response:
        database = self._database(request, "admin")
        name = request.match_info["segment"]
        body = await read_json(request, self.limit)
        with _refusals():
            write = self.catalog.prepare_put(database, name, body)
        await self._write(write.key, write.value)
        return json_response(_info(self._entry(database, name), None, building=True))

    async def delete_segment(self, request: web.Request) -> web.Response:
        database = self._database(request, "admin")
        name = request.match_info["segment"]
        with _refusals():
            write = self.catalog.prepare_delete(database, name)
        if await self._used(request, database, name):
            raise ApiError(409, f"segment {name!r} is the audience of a scheduled send; cancel the send first")
        await self._write(write.key, write.value)
        return json_response({"name": name, "deleted": True})

    async def _used(self, request: web.Request, database: str, name: str) -> bool:
        """Whether a scheduled audience send of any `messages` partition still waits for the segment."""
        if self.audiences is None:
            return False
        local, remote = self.owners.split(MESSAGES)
        if self._used_here(database, name, local):
            return True
        path = f"/api/v1/databases/{database}/segments/{name}"
        answers = await asyncio.gather(
            *(self._ask(request, "GET", url, path, ps, query={"uses": "1"}) for url, ps in remote.items())
        )
        return any(bool(answer.get("used")) for answer in answers)

    def _used_here(self, database: str, name: str, partitions: list[int]) -> bool:
        self.owners.require_owned(MESSAGES, partitions)
        return self.audiences is not None and self.audiences.uses(partitions, database, name)

    async def _write(self, key: bytes, value: bytes | None) -> None:
        try:
            await self.engine.writer.write(key, value)
        except TimeoutError:
            raise unavailable("the segment definitions topic did not acknowledge in time") from None

    # -- counts --------------------------------------------------------------------------------

    def _local_counts(self, database: str, partitions: list[int]) -> Counts:
        """Members per segment in these partitions of this worker; None where one is still building."""
        names = [entry.name for entry in self.catalog.segments(database)]
        counts: Counts = dict.fromkeys(names, 0)
        self.owners.require_owned(SEGMENTS, partitions)
        for partition in partitions:
            part = self.engine.loaded(partition)
            for name in names:
                count = part.count(database, name) if part is not None else None
                total = counts[name]
                counts[name] = None if count is None or total is None else total + count
        return counts

    async def _counts(self, request: web.Request, database: str) -> Counts:
        local, remote = self._split()
        counts = self._local_counts(database, local)
        path = f"/api/v1/databases/{database}/segments"
        answers = await asyncio.gather(*(self._ask(request, "GET", url, path, ps) for url, ps in remote.items()))
        for answer in answers:
            for name, count in dict(answer["counts"]).items():
                if name in counts:
                    total = counts[name]
                    counts[name] = None if count is None or total is None else total + int(count)
        return counts

    def _split(self) -> tuple[list[int], dict[URL, list[int]]]:
        """This worker's partitions, and the others' by owner."""
        return self.owners.split(SEGMENTS)

    async def _ask(
        self,
        request: web.Request,
        method: str,
        owner: URL,
        path: str,
        partitions: list[int],
        body: bytes = b"",
        query: dict[str, str] | None = None,
    ) -> Any:
        url = owner.with_path(path).with_query({"partitions": ",".join(map(str, partitions)), **(query or {})})
        passed = {"Authorization": request.headers.get("Authorization", "")}
        if body:
            passed["Content-Type"] = "application/json"
        headers = self.owners.signed_headers(method, url, passed, body)
        try:
            async with self.owners.session.request(method, url, headers=headers, data=body or None) as reply:
                if reply.status != 200:
                    raise unavailable(f"segments of partitions {partitions} not available ({reply.status})")
                return await reply.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(f"owner of partitions {partitions} unreachable: {exc}") from None

    # -- members -------------------------------------------------------------------------------

    async def get_members(self, request: web.Request) -> web.Response:
        database = self._database(request, "recipients:read")
        entry = self._entry(database, request.match_info["segment"])
        limit = _limit(request)
        partition, after = self._cursor(request)

        async def read() -> web.Response:
            members, cursor = self._page(database, entry.name, partition, after, limit)
            return json_response({"members": members, "cursor": cursor})

        return await self.owners.serve(request, SEGMENTS, partition, read)

    def _page(
        self, database: str, segment: str, partition: int, after: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """Members from (partition, after) on, through the partitions this worker holds in a row."""
        page: list[str] = []
        while True:
            part = self.engine.loaded(partition)
            if part is None or part.count(database, segment) is None:
                raise unavailable(f"segment {segment} not ready in partition {partition}")
            members = part.members(database, segment)
            start = bisect_right(members, after) if after is not None else 0
            taken = members[start : start + limit - len(page)]
            page += taken
            if start + len(taken) < len(members):
                return page, _encode_cursor(partition, taken[-1])
            partition, after = partition + 1, None
            if partition >= self.partitions:
                return page, None
            if len(page) >= limit or self.owners.owner_of_partition(SEGMENTS, partition) is not None:
                return page, _encode_cursor(partition, None)

    def _cursor(self, request: web.Request) -> tuple[int, str | None]:
        raw = request.query.get("cursor")
        if raw is None:
            return 0, None
        match = _CURSOR.match(raw)
        problem = [FieldError("/query/cursor", "not a cursor this API gave")]
        if match is None or int(match.group(1)) >= self.partitions:
            raise unprocessable(problem)
        if match.group(2) is None:
            return int(match.group(1)), None
        try:
            after = base64.urlsafe_b64decode(match.group(2) + "=" * (-len(match.group(2)) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise unprocessable(problem) from None
        return int(match.group(1)), after

    # -- one recipient -------------------------------------------------------------------------

    async def get_recipient_segments(self, request: web.Request) -> web.Response:
        database = self._database(request, "recipients:read")
        original_id = request.match_info["originalId"]
        problems = check_original_id(original_id, "/originalId")
        if problems:
            raise unprocessable(problems, "invalid originalId")
        key = recipient_key(database, original_id)

        async def read() -> web.Response:
            partition = self.owners.partition(key)
            if self.sa.recipients.get(partition, key) is None:
                raise not_found(f"recipient {original_id!r} in database {database!r}")
            part = self.engine.loaded(partition)
            if part is None:
                raise unavailable(f"segments of partition {partition} loading")
            return json_response({"originalId": original_id, "segments": part.segments_of(database, original_id)})

        return await self.owners.serve_key(request, SEGMENTS, key, read)

    # -- preview -------------------------------------------------------------------------------

    async def preview(self, request: web.Request) -> web.Response:
        database = self._database(request, "recipients:read")
        raw = await read_json(request, self.limit)
        with _refusals():
            node = self.catalog.validate(database, raw)
        now = datetime.now(UTC)
        if "partitions" in request.query:
            wanted = parse_partitions(request.query.getall("partitions"), self.partitions)
            count, sample = await self._preview_here(database, node, wanted, now)
            return json_response({"count": count, "sample": sample})
        local, remote = self._split()
        body = msgspec.json.encode(raw)  # the body as parsed: each owner parses and checks it the same
        path = request.rel_url.path
        asked = [self._ask(request, "POST", url, path, ps, body) for url, ps in remote.items()]
        here, *answers = await asyncio.gather(self._preview_here(database, node, local, now), *asked)
        count, sample = here
        for answer in answers:
            count += int(answer["count"])
            sample += [str(s) for s in answer["sample"]]
        return json_response({"count": count, "sample": sample[:SAMPLE]})

    async def _preview_here(
        self, database: str, node: Any, partitions: list[int], now: datetime
    ) -> tuple[int, list[str]]:
        count, sample = 0, list[str]()
        tz = self.sa.settings.service.zone
        for partition in partitions:
            self.owners.require_owned(SEGMENTS, [partition])  # checked before each: the loop awaits
            found, some = await preview_partition(
                partition, database, node, self.sa.recipients, self.sa.history, self.engine.loaded(partition), now, tz
            )
            count += found
            sample += some[: SAMPLE - len(sample)]
        return count, sample


def _info(entry: SegmentEntry, count: int | None, building: bool = False) -> dict[str, Any]:
    return {
        "name": entry.name,
        "definition": entry.definition,
        "count": None if building else count,
        "state": "building" if building or count is None else "ready",
        "updatedAt": entry.updated_at,
        "source": entry.source,
    }


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_MEMBERS
    if not raw.isdecimal() or not raw.isascii() or len(raw) > 6 or not 1 <= int(raw) <= MAX_MEMBERS:
        raise unprocessable([FieldError("/query/limit", f"must be a whole number from 1 to {MAX_MEMBERS:,}")])
    return int(raw)


def _encode_cursor(partition: int, after: str | None) -> str:
    if after is None:
        return str(partition)
    return f"{partition}:{base64.urlsafe_b64encode(after.encode()).decode().rstrip('=')}"


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turns the catalog's refusals into API errors (404, 409, 422 with the definition's paths)."""
    try:
        yield
    except errors.CatalogError as exc:
        raise _api_error(exc) from None


def _api_error(exc: errors.CatalogError) -> ApiError:
    if isinstance(exc, errors.UnknownDatabase | errors.UnknownSegment):
        return ApiError(404, str(exc))
    if isinstance(exc, errors.ConfigDefined | errors.SegmentInUse):
        return ApiError(409, str(exc))
    if isinstance(exc, errors.InvalidDefinition):
        return unprocessable([FieldError(path or "/", message) for path, message in exc.errors], "invalid definition")
    return unprocessable([FieldError("/segment", str(exc))], "invalid segment name")
