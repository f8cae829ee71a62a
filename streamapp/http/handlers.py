"""Every route of the API in one place (the shape of listmonk's cmd/handlers.go).

Each handler is bound to its operation id; the method, the path, the scope, the body and the
answers of that operation are declared once, in `streamapp.http.route_specs`, which both
registers the aiohttp route here and generates the OpenAPI document (`routing.openapi_document`).
The handlers live in `streamapp.http.routes`, one module per resource.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from streamapp.http.auth import Authenticator
from streamapp.http.forwarding import OwnerRouter
from streamapp.http.route_specs import api_routes
from streamapp.http.routes.batches import BatchRoutes, CancelRoutes
from streamapp.http.routes.bounces import BounceRoutes
from streamapp.http.routes.health import HealthRoutes
from streamapp.http.routes.messages import MessageRoutes
from streamapp.http.routes.recipients import RecipientRoutes
from streamapp.http.routes.reports import ReportRoutes
from streamapp.http.routes.segments import SegmentRoutes
from streamapp.http.routes.tracking import TrackingRoutes
from streamapp.http.routes.triggers import TriggerRoutes
from streamapp.http.routes.unsubscribe import UnsubscribeRoutes
from streamapp.http.schemas import database_checks
from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.runtime import StreamApp

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def handlers(sa: StreamApp, owners: OwnerRouter) -> dict[str, Handler]:
    """Operation id -> handler, for every route this worker serves."""
    auth = Authenticator(sa.settings.tokens)
    checks = database_checks(sa.settings)  # the request models' checks, bound per database once
    health = HealthRoutes(sa)
    recipients = RecipientRoutes(sa, auth, owners, checks)
    bound: dict[str, Handler] = {
        "healthz": health.healthz,
        "metrics": health.metrics,
        "openapi": health.openapi,
        "listDatabases": recipients.list_databases,
        "upsertRecipient": recipients.put_recipient,
        "upsertRecipients": recipients.post_recipients,
        "getRecipient": recipients.get_recipient,
        "eraseRecipient": recipients.delete_recipient,
        "addHistory": recipients.post_history,
        "getHistory": recipients.get_history,
        **segment_handlers(SegmentRoutes(sa, auth, owners, sa.sending.engine.audiences if sa.sending else None)),
    }
    if sa.sending is None:
        return bound
    triggers = TriggerRoutes(sa, sa.sending, auth, owners, checks)
    batches = BatchRoutes(sa.settings, sa.batches, sa.sending, auth, owners)
    messages = MessageRoutes(sa.settings, sa.sending, auth, owners)
    unsubscribe = UnsubscribeRoutes(
        sa.publisher.publish, unsubscribe_keys(sa.settings), owners, sa.sending.engine.ledger
    )
    tracking = TrackingRoutes(sa, sa.sending, owners, unsubscribe_keys(sa.settings))
    bound |= {
        "sendTriggerMessage": triggers.post_message,
        "sendTriggerBatch": triggers.post_trigger_batch,
        "sendCampaign": triggers.post_campaign_sends,
        "getBatch": batches.get_batch,
        "cancelBatch": CancelRoutes(sa.settings, sa.batches, sa.sending, auth, owners).cancel_batch,
        "getMessage": messages.get_message,
        "unsubscribePage": unsubscribe.confirm_page,
        "unsubscribe": unsubscribe.unsubscribe,
        "trackOpen": tracking.open_pixel,
        "trackClick": tracking.click,
        "getCampaignReport": ReportRoutes(sa.settings, sa.sending, auth, owners).get_report,
        "postBounces": BounceRoutes(sa, auth).post_bounces,
    }
    return bound


def segment_handlers(segments: SegmentRoutes) -> dict[str, Handler]:
    return {
        "listSegments": segments.list_segments,
        "previewSegment": segments.preview,
        "getSegment": segments.get_segment,
        "putSegment": segments.put_segment,
        "deleteSegment": segments.delete_segment,
        "getSegmentMembers": segments.get_members,
        "getRecipientSegments": segments.get_recipient_segments,
    }


def register_routes(app: web.Application, sa: StreamApp, owners: OwnerRouter) -> None:
    """Register each documented route with its handler; a route without one (or the reverse) is a bug."""
    bound = handlers(sa, owners)
    routes = api_routes(sa.settings)
    documented = {route.operation_id for route in routes}
    if documented != set(bound):
        raise RuntimeError(f"routes and handlers differ: {sorted(documented ^ set(bound))}")
    for route in routes:
        app.router.add_route(route.method, route.path, bound[route.operation_id])
