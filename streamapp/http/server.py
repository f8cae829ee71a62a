"""The worker's HTTP server: an aiohttp app run as a mode.Service beside Faust.

Faust's own web server is disabled (its built-in routes expose tables and
the router); this one serves only the routes of SPEC §4.

Request bodies are never inflated: aiohttp's decompression is off (`auto_decompress=False`: it
would inflate in its payload parser as the bytes arrive, before any handler runs), and a body
with a Content-Encoding is answered 415 from the header (`refuse_encoded`).

A request that says another worker forwarded it (`X-Streamapp-Forwarded`) must carry that
worker's signature (streamapp.http.signatures): 401 otherwise (`trust_forwarded`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import StreamReader, web
from mode import Service

from streamapp import metrics
from streamapp.core.validation import InvalidInput
from streamapp.http.bodies import read_limited, refuse_content_encoding
from streamapp.http.errors import ApiError, json_response, unavailable, unprocessable
from streamapp.http.forwarding import OwnerRouter
from streamapp.http.handlers import register_routes
from streamapp.http.loop_lag import probe_loop_lag
from streamapp.http.signatures import FORWARDED, RequestSigner, forwarding_keys
from streamapp.kafka.ownership import Ownership
from streamapp.kafka.publisher import KafkaUnavailable
from streamapp.runtime import StreamApp

log = logging.getLogger(__name__)

#: Methods counted by name in streamapp_http_requests_total; any other is `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.Request) -> str:
    """The matched route's template, never the raw path (no recipient data in labels)."""
    route = request.match_info.route
    if isinstance(route, web.ResourceRoute):
        return route.resource.canonical if route.resource else "unmatched"
    return "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request; turn ApiError and crashes into JSON."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except InvalidInput as exc:
        response = unprocessable(exc.errors, exc.message).response()
    except KafkaUnavailable as exc:
        response = unavailable(f"{request.method} {request.path}: {exc}").response()
    except web.HTTPException as exc:
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        response = json_response({"error": exc.reason}, status=exc.status, headers=kept)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = json_response({"error": "internal error"}, status=500)
    route = route_template(request)
    method = request.method if request.method in METHODS else "other"  # a label never takes what clients invent
    metrics.HTTP_REQUESTS.labels(method=method, route=route, code=str(response.status)).inc()
    metrics.HTTP_DURATION.labels(route=route).observe(time.perf_counter() - started)
    return response


@web.middleware
async def refuse_encoded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """415 for a body with a Content-Encoding (SPEC §4), before the handler reads a byte of it.

    Inside `observe`, so the answer has the JSON shape and is counted; an unknown route or method
    keeps its 404 or 405.
    """
    if request.match_info.http_exception is None:
        refuse_content_encoding(request)
    return await handler(request)


def trust_forwarded(signer: RequestSigner, max_body_bytes: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    """401 for a request with `X-Streamapp-Forwarded` but no valid, fresh signature of a worker.

    Inside `observe` and `refuse_encoded`. The signature covers the body, which is read here (a
    forwarded body is a single message, at most `max_body_bytes`) and handed on to the handler.
    """

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        signature = request.headers.get(FORWARDED)
        if signature is None:
            return await handler(request)
        body = await read_limited(request, max_body_bytes) if request.body_exists else b""
        if not signer.verifies(signature, request.method, request.rel_url.raw_path_qs, request.headers, body):
            raise ApiError(401, "forwarded request without a valid worker signature")
        return await handler(_with_body(request, body) if body else request)

    return check


def _with_body(request: web.Request, body: bytes) -> web.Request:
    """The request again, its body readable a second time (aiohttp has no public way to put one back)."""
    # A limit above the body's size: feeding it must not pause reading the connection.
    reader = StreamReader(request.protocol, len(body) + 1, loop=asyncio.get_running_loop())
    reader.feed_data(body)
    reader.feed_eof()
    again = request.clone()
    again._payload = reader
    return again


def owner_router(sa: StreamApp) -> OwnerRouter:
    service = sa.settings.service
    signer = RequestSigner(forwarding_keys(sa.settings))
    return OwnerRouter(Ownership(sa.kafka, service.advertised_url), service.partitions, signer)


def build_web_app(sa: StreamApp, owners: OwnerRouter) -> web.Application:
    limit = sa.settings.service.max_body_bytes
    middlewares = [observe, refuse_encoded, trust_forwarded(owners.signer, limit)]
    app = web.Application(middlewares=middlewares, client_max_size=limit + 1)
    register_routes(app, sa, owners)
    return app


class ApiServer(Service):  # type: ignore[misc]
    """Runs the aiohttp app, and the event-loop lag probe, for as long as the worker runs."""

    def __init__(self, sa: StreamApp, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.sa = sa
        self.owners = owner_router(sa)
        self.runner = web.AppRunner(build_web_app(sa, self.owners), access_log=None, auto_decompress=False)

    async def on_start(self) -> None:
        service = self.sa.settings.service
        self.add_future(probe_loop_lag())
        await self.runner.setup()
        site = web.TCPSite(self.runner, service.web_host, service.web_port, reuse_address=True)
        await site.start()
        log.info("API listening on http://%s:%s", service.web_host, service.web_port)

    async def on_stop(self) -> None:
        await self.owners.close()
        await self.runner.cleanup()
