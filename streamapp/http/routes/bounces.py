"""`POST /api/v1/bounces` (SPEC §4, §11): bounce and complaint events from an e-mail provider's webhook.

Providers cannot send a bearer header, so the `send` token may also come as the basic-auth password or
as `?token=` (Authenticator.require_webhook). Each event that names a message of this deployment becomes
a BounceNotice on the message's partition (streamapp.sending.reports), applied by its owner as a report
read by the return-path listener is; the answer (202) comes once Kafka has them all. An event read twice,
or a second event of the same kind about the same message, changes nothing more.

Only the generic form is read here (`provider=generic`, the default); the providers' own forms (SES
through SNS, SendGrid, Postmark, Mailgun, with their signatures) are refused with a 422 that says so.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from streamapp.core import clock
from streamapp.core.models import BounceNotice, ReportKind
from streamapp.core.validation import FieldError
from streamapp.http.auth import Authenticator
from streamapp.http.bodies import read_json
from streamapp.http.errors import json_response, unprocessable
from streamapp.http.schemas import BounceEvent, BounceEvents
from streamapp.http.validate import validate
from streamapp.kafka.publisher import ACK_DEADLINE, acknowledged_within, faust_send
from streamapp.runtime import StreamApp
from streamapp.sending.reports import publish_notices

PROVIDERS = ("generic",)


class BounceRoutes:
    def __init__(self, sa: StreamApp, auth: Authenticator) -> None:
        self.sa = sa
        self.auth = auth

    async def post_bounces(self, request: web.Request) -> web.Response:
        self.auth.require_webhook(request, "send")
        provider = request.query.get("provider", "generic")
        if provider not in PROVIDERS:
            raise unprocessable([FieldError("/query/provider", f"{provider!r} is not read yet; use 'generic'")])
        checked = validate(await read_json(request, self.sa.settings.service.max_body_bytes), BounceEvents)
        if checked.value is None:
            raise unprocessable(checked.errors)
        events = checked.value.events
        if errors := [FieldError(f"/events/{i}/time", "not an ISO 8601 time") for i, e in enumerate(events)
                      if e.time is not None and _time(e.time) is None]:  # fmt: skip
            raise unprocessable(errors)
        now = clock.iso(datetime.now(UTC))
        notices = [(e.messageId, _notice(e, now)) for e in events if e.messageId]
        async with acknowledged_within(ACK_DEADLINE):
            published = await publish_notices(faust_send(self.sa.faust), self.sa.settings, notices)
        answer = {"accepted": published, "ignored": len(events) - published}
        return json_response(answer, status=202)


def _time(text: str) -> str | None:
    try:
        return clock.iso(clock.parse_time(text))
    except ValueError:
        return None


def _notice(event: BounceEvent, now: str) -> BounceNotice:
    kind: ReportKind = "complaint" if event.type == "complaint" else (event.kind or "hard")
    at = (_time(event.time) if event.time else None) or now
    return BounceNotice(kind=kind, source="webhook", at=at, reason=event.reason)
