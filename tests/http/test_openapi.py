"""The OpenAPI document lists every route the worker serves, with its methods."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from openapi_spec_validator import validate as validate_spec

from streamapp.http.routes.health import HealthRoutes
from streamapp.http.server import build_web_app, owner_router
from streamapp.settings import load_settings
from streamapp.worker import assemble
from tests.fixtures import config_text
from tests.sending.fixtures import smtp_extra, write_templates


def test_every_served_route_is_documented(tmp_path: Path) -> None:
    write_templates(tmp_path)
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text("kafka://127.0.0.1:1", tmp_path / "data", 1, "openapi", extra=smtp_extra(2525)))
    settings = load_settings(config, environ={})
    sa = assemble(settings)
    app = build_web_app(sa, owner_router(sa))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if isinstance(route, web.ResourceRoute) and route.resource is not None and route.method != "HEAD"
    }
    document = HealthRoutes(sa).document  # what GET /api/v1/openapi.json answers
    validate_spec(document)
    paths = document["paths"]
    documented = {(method.upper(), path) for path, item in paths.items() for method in item if method != "parameters"}
    assert served == documented
    assert ("POST", "/api/v1/triggers/{trigger}/messages") in served
