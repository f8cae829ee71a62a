"""Reading request bodies within the size limit: JSON, a JSON array, or NDJSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web

from streamapp.core.validation import FieldError
from streamapp.http.errors import ApiError, unprocessable

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines")


async def chunks_within(request: web.Request, limit: int, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
    """The body as it arrives; 413 as soon as it is known to exceed `limit` bytes (counted as received)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body of {request.content_length} bytes exceeds the limit of {limit} bytes")
    size = 0
    async for chunk in request.content.iter_chunked(chunk_size):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body exceeds the limit of {limit} bytes")
        yield chunk


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The raw body, or 413 once it is known to exceed `limit` bytes."""
    return b"".join([chunk async for chunk in chunks_within(request, limit)])


def parse_json(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise unprocessable([FieldError("/", f"malformed JSON: {exc}")], "malformed JSON") from None


def parse_items(data: bytes, content_type: str) -> list[Any]:
    """A JSON array, or NDJSON (one JSON value per line; chosen by type or by sniffing)."""
    if content_type in NDJSON_TYPES or (content_type != "application/json" and not data.lstrip().startswith(b"[")):
        return _parse_ndjson(data)
    items = parse_json(data)
    if not isinstance(items, list):
        raise unprocessable([FieldError("/", "must be a JSON array (or send NDJSON)")])
    return items


def _parse_ndjson(data: bytes) -> list[Any]:
    items: list[Any] = []
    errors: list[FieldError] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(msgspec.json.decode(line))
        except (msgspec.DecodeError, RecursionError) as exc:
            errors.append(FieldError(f"line {number}", f"malformed JSON: {exc}"))
    if errors:
        raise unprocessable(errors, "malformed NDJSON")
    return items
