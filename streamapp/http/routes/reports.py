"""`GET /api/v1/campaigns/{campaign}/report` (scope `send`): what became of a campaign's messages.

Every sent message of a campaign counts in its ledger partition's `~c` row (streamapp.sending.ledger)
by status and by engagement mark, each mark once per message however often it happened, so the
report is one read per partition, exact under replays. This worker reads its own partitions and asks
the owners of the others with `?partitions=` (same token), as the batch status does.

- `sent`: accepted by the relay; `delivered`: of those, not bounced since;
- `bounced`: hard bounces (refused at SMTP, or reported later); `complained`, `unsubscribed`;
- `opened`: unique human opens (machine opens are `machineOpened`), `clicked`: unique clicks;
- `messages`: every message of the campaign by status.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from streamapp.http.auth import Authenticator, require_database
from streamapp.http.errors import json_response, not_found, unavailable
from streamapp.http.forwarding import OwnerRouter
from streamapp.http.routes.batches import parse_partitions
from streamapp.runtime import Sending
from streamapp.sending.ledger import Ledger
from streamapp.settings import Settings
from streamapp.tables.messages import MESSAGES

Tally = tuple[Counter[str], Counter[str]]


class ReportRoutes:
    def __init__(self, settings: Settings, sending: Sending, auth: Authenticator, owners: OwnerRouter) -> None:
        self.settings = settings
        self.partitions = settings.service.partitions
        self.auth = auth
        self.owners = owners
        self.ledger = Ledger(sending.messages)

    async def get_report(self, request: web.Request) -> web.Response:
        token = self.auth.require(request, "send")
        name = request.match_info["campaign"]
        campaign = self.settings.campaigns.get(name)
        if campaign is None:
            raise not_found(f"campaign {name!r}")
        require_database(token, campaign.database)
        if "partitions" in request.query:  # another worker asks for the counts of its partitions
            wanted = parse_partitions(request.query.getall("partitions"), self.partitions)
            counts, engaged = self._local(campaign.database, name, wanted)
            return json_response({"counts": dict(counts), "engaged": dict(engaged)})
        counts, engaged = await self._tally(request, campaign.database, name)
        return json_response(report(name, campaign.database, counts, engaged))

    def _local(self, database: str, name: str, partitions: list[int]) -> Tally:
        counts: Counter[str] = Counter()
        engaged: Counter[str] = Counter()
        self.owners.require_owned(MESSAGES, partitions)
        for partition in partitions:
            row = self.ledger.campaign_counts(partition, database, name)
            if row is not None:
                counts.update(row.counts)
                engaged.update(row.engaged)
        return counts, engaged

    async def _tally(self, request: web.Request, database: str, name: str) -> Tally:
        local, remote = self.owners.split(MESSAGES)
        counts, engaged = self._local(database, name, local)
        answers = await asyncio.gather(*(self._ask(request, url, name, ps) for url, ps in remote.items()))
        for answer in answers:
            counts.update(answer.get("counts", {}))
            engaged.update(answer.get("engaged", {}))
        return counts, engaged

    async def _ask(self, request: web.Request, owner: URL, name: str, partitions: list[int]) -> dict[str, Any]:
        url = owner.with_path(request.rel_url.raw_path, encoded=True).with_query(
            partitions=",".join(map(str, partitions))
        )
        headers = self.owners.signed_headers("GET", url, {"Authorization": request.headers.get("Authorization", "")})
        try:
            async with self.owners.session.get(url, headers=headers) as reply:
                if reply.status != 200:
                    raise unavailable(f"report of partitions {partitions} not available ({reply.status})")
                body: dict[str, Any] = await reply.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(f"owner of partitions {partitions} unreachable: {exc}") from None


def report(name: str, database: str, counts: Counter[str], engaged: Counter[str]) -> dict[str, Any]:
    """The report of SPEC §8 from a campaign's status counts and engagement marks."""
    later_bounced = counts.get("bounced", 0)  # accepted, then a bounce report came back (SPEC §3)
    return {
        "campaign": name,
        "database": database,
        "sent": counts.get("sent", 0) + later_bounced,
        "delivered": counts.get("sent", 0),
        "bounced": engaged.get("bounced", 0),
        "complained": engaged.get("complained", 0),
        "unsubscribed": engaged.get("unsubscribed", 0),
        "opened": engaged.get("opened", 0),
        "machineOpened": engaged.get("machine", 0),
        "clicked": engaged.get("clicked", 0),
        "messages": {status: n for status, n in sorted(counts.items()) if n},
    }
