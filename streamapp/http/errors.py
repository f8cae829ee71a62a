"""API errors: one JSON shape, `{"error": ..., "details": [{"path", "message"}]}`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from aiohttp import web

from streamapp.core.validation import FieldError

log = logging.getLogger(__name__)

#: Details listed in one answer; a 10,000-row body can have more bad fields.
MAX_DETAILS = 1000
#: The whole of a 503's body: why is logged, never sent (it can name workers, partitions, exceptions).
UNAVAILABLE = "temporarily unavailable (worker starting or rebalancing): retry after Retry-After seconds"


class ApiError(Exception):
    """Raised by handlers; turned into a JSON response by the error middleware."""

    def __init__(
        self,
        status: int,
        error: str,
        details: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = list(details)
        self.headers = headers or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error}
        if self.details:
            body["details"] = [d.as_dict() for d in self.details[:MAX_DETAILS]]
            if len(self.details) > MAX_DETAILS:
                body["detailsOmitted"] = len(self.details) - MAX_DETAILS
        return json_response(body, status=self.status, headers=self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json", headers=headers)


def unprocessable(details: Sequence[FieldError], error: str = "invalid body") -> ApiError:
    return ApiError(422, error, details)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def unavailable(reason: str, hint: str | None = None) -> ApiError:
    """503 with the generic UNAVAILABLE and, if given, a `hint` safe for clients (e.g. a batch to check);
    `reason` goes to the operators' log only."""
    log.info("503 answered: %s", reason)
    return ApiError(503, f"{UNAVAILABLE}; {hint}" if hint else UNAVAILABLE, headers={"Retry-After": "1"})
