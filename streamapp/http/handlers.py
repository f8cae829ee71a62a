"""Every route of the API in one place (the shape of listmonk's cmd/handlers.go).

A newcomer finds here which handler serves which path; the handlers live in
`streamapp.http.routes`, one module per resource.
"""

from __future__ import annotations

from aiohttp import web

from streamapp.http.auth import Authenticator
from streamapp.http.forwarding import OwnerRouter
from streamapp.http.routes.batches import BatchRoutes
from streamapp.http.routes.health import HealthRoutes
from streamapp.http.routes.messages import MessageRoutes
from streamapp.http.routes.recipients import RecipientRoutes
from streamapp.http.routes.triggers import TriggerRoutes
from streamapp.http.routes.unsubscribe import UnsubscribeRoutes
from streamapp.runtime import StreamApp
from streamapp.sending.engine import unsubscribe_secret


def register_routes(app: web.Application, sa: StreamApp, owners: OwnerRouter) -> None:
    auth = Authenticator(sa.settings.tokens)
    r = app.router

    health = HealthRoutes(sa)
    r.add_get("/healthz", health.healthz)
    r.add_get("/metrics", health.metrics)
    r.add_get("/api/v1/openapi.json", health.openapi)

    recipients = RecipientRoutes(sa, auth, owners)
    db = "/api/v1/databases"
    r.add_get(db, recipients.list_databases)
    r.add_put(db + "/{db}/recipients/{originalId}", recipients.put_recipient)
    r.add_post(db + "/{db}/recipients", recipients.post_recipients)
    r.add_get(db + "/{db}/recipients/{originalId}", recipients.get_recipient)
    r.add_delete(db + "/{db}/recipients/{originalId}", recipients.delete_recipient)
    r.add_post(db + "/{db}/history", recipients.post_history)
    r.add_get(db + "/{db}/recipients/{originalId}/history", recipients.get_history)

    if sa.sending is None:
        return
    triggers = TriggerRoutes(sa, sa.sending, auth, owners)
    r.add_post("/api/v1/triggers/{trigger}/messages", triggers.post_message)
    r.add_post("/api/v1/triggers/{trigger}/batches", triggers.post_trigger_batch)
    r.add_post("/api/v1/campaigns/{campaign}/sends", triggers.post_campaign_sends)

    batches = BatchRoutes(sa.settings, sa.batches, sa.sending, auth, owners)
    r.add_get("/api/v1/batches/{batchId}", batches.get_batch)

    messages = MessageRoutes(sa.settings, sa.sending, auth, owners)
    r.add_get("/api/v1/messages/{messageId}", messages.get_message)

    unsubscribe = UnsubscribeRoutes(sa.publisher.publish, unsubscribe_secret(sa.settings))
    r.add_get("/u/{token}", unsubscribe.confirm_page)
    r.add_post("/u/{token}", unsubscribe.unsubscribe)
