"""`GET /healthz`, `GET /metrics` and `GET /api/v1/openapi.json`: the routes without a token."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamapp import __version__, metrics
from streamapp.http.errors import json_response
from streamapp.http.route_specs import api_routes
from streamapp.http.routing import openapi_document
from streamapp.runtime import StreamApp


class HealthRoutes:
    def __init__(self, sa: StreamApp) -> None:
        self.sa = sa
        self.document: dict[str, Any] = openapi_document(api_routes(sa.settings), sa.settings, __version__)

    async def healthz(self, request: web.Request) -> web.Response:
        ready = self.sa.is_ready()
        return json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(self.document)
