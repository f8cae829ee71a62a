"""`GET /u/{token}` (a confirmation page) and `POST /u/{token}` (RFC 8058 one-click unsubscribe).

No authentication: the HMAC token is the authority (streamapp.mail.unsubscribe). A forged,
altered or expired (older than 90 days) token is 404 and changes nothing. The POST answers 200
with a short page, never a redirect (RFC 8058 §3.2: mail providers POST
`List-Unsubscribe=One-Click` and follow nothing), once Kafka acknowledged the `unsubscribed`
upsert of the recipient and its `mail.unsubscribed` history record. Both are `ifExists`: applied
by the owner of the recipient's partition only to a recipient that exists there then, so a link
in an old mail never brings back an erased recipient. The answer is the same either way: the page
tells no one whether the recipient exists. The GET page changes nothing (link scanners prefetch
GETs); its button POSTs to the same URL.

With `owners` and the engine's `ledger`, the POST is served by the worker owning the message's
ledger partition, which also marks the message `unsubscribed` there (its batch and campaign counts,
streamapp.sending.ledger); with no owner reachable, any worker publishes the unsubscribe alone.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from aiohttp import web

from streamapp.core import clock
from streamapp.core.engagement import engagement
from streamapp.core.ids import partition_of
from streamapp.core.models import RecipientCommand, UpsertRecipient
from streamapp.http.forwarding import OwnerRouter
from streamapp.mail.unsubscribe import UnsubscribeTarget, read_token
from streamapp.sending.ledger import Ledger
from streamapp.settings import KeyRing
from streamapp.tables.messages import MESSAGES

Publish = Callable[[list[RecipientCommand]], Awaitable[None]]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">
<h1>{title}</h1>
{body}
</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = _PAGE.format(title=html.escape(title), body=body)
    return web.Response(text=text, status=status, content_type="text/html", headers={"Cache-Control": "no-store"})


class UnsubscribeRoutes:
    def __init__(
        self, publish: Publish, secret: KeyRing, owners: OwnerRouter | None = None, ledger: Ledger | None = None
    ) -> None:
        self.publish = publish
        self.secret = secret
        self.owners = owners
        self.ledger = ledger

    def _target(self, request: web.Request) -> UnsubscribeTarget:
        target = read_token(self.secret, request.match_info["token"])
        if target is None:
            raise web.HTTPNotFound(text="unknown or expired unsubscribe link")
        return target

    async def confirm_page(self, request: web.Request) -> web.Response:
        self._target(request)
        action = html.escape(request.rel_url.path, quote=True)
        form = (
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        return _page("Unsubscribe", f"<p>Stop receiving these e-mails?</p>{form}")

    async def unsubscribe(self, request: web.Request) -> web.Response:
        target = self._target(request)
        partition = partition_of(target.message_id)
        if self.owners is None or self.ledger is None or partition is None:
            return await self._unsubscribe(target)
        ledger = self.ledger

        async def here() -> web.Response:
            answer = await self._unsubscribe(target)
            await ledger.engage(partition, target.message_id, "unsubscribed")
            return answer

        return await self.owners.serve(
            request, MESSAGES, partition, here, without_owner=lambda: self._unsubscribe(target)
        )

    async def _unsubscribe(self, target: UnsubscribeTarget) -> web.Response:
        at = clock.now_iso()
        command = UpsertRecipient(
            database=target.database,
            originalId=target.original_id,
            at=at,
            status="unsubscribed",
            ifExists=True,
        )
        # Engagement history (SPEC §8), once per message however often the link is used; the agent takes
        # its sku from the message's mail.sent record (the token does not name the trigger or campaign).
        record = engagement(
            "mail.unsubscribed", database=target.database, original_id=target.original_id,
            message_id=target.message_id, name=None, at=at,
        )  # fmt: skip
        await self.publish([command, record])
        return _page("Unsubscribed", "<p>You will not receive these e-mails any more.</p>")
