"""Open and click tracking tokens (SPEC §8): which message, whose, and for a click where to go.

A token is signed like an unsubscribe token (streamapp.mail.tokens): the URL-safe base64 of

    kind (b"o" open, b"c" click) | version (1) | issued (4 bytes, Unix s) | database | originalId
    | messageId | name | [url] | HMAC-SHA256[:16]

with the deployment's key ring (`[service] secret_file`): the first key signs, every key verifies,
so links in mail sent before a rotation keep working. Any worker can serve any link with no lookup.
A click token carries its URL itself, not an index into the message (which is not stored), so the
redirect goes exactly where the signed token says and nowhere else: an altered or unsigned token
is a 404, never an open redirect. `issued` is when the message was built, just before it was handed
to SMTP: an open within 60 s of it is a machine's (a mail-privacy prefetcher or a scanner).

Tracking tokens do not expire: a link in an old mail must still lead somewhere. What an old link
records is bounded elsewhere (the ledger row is gone after retention; an erased recipient gets no
history back).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from streamapp.mail import tokens
from streamapp.settings import KeyRing

VERSION = 1
Kind = Literal["open", "click"]
_KINDS: dict[Kind, bytes] = {"open": b"o", "click": b"c"}
_CONTEXT = b"streamapp-tracking\0"
_ISSUED = struct.Struct(">I")
_HEADER = 2 + _ISSUED.size
#: Longest URL a click token carries; a longer link is left as it is (not tracked).
MAX_URL_BYTES = 2048
_TRACKABLE = re.compile(r"https?://[^\s\x00-\x1f\x7f]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    """What a token names: the message, its recipient and its trigger or campaign (`name`)."""

    database: str
    original_id: str
    message_id: str
    name: str


@dataclass(frozen=True, slots=True)
class TrackingTarget:
    """A genuine token: its kind, message, issue time (Unix s) and, for a click, the URL."""

    kind: Kind
    message: TrackedMessage
    issued: int
    url: str | None = None


def make_token(
    signing_key: bytes, kind: Kind, message: TrackedMessage, url: str | None = None, *, issued_at: float | None = None
) -> str:
    """The token of `message`'s pixel (`open`) or of one of its links (`click`, with its `url`)."""
    if (kind == "click") != (url is not None):
        raise ValueError("a click token needs its URL, an open token has none")
    issued = int(datetime.now(UTC).timestamp() if issued_at is None else issued_at)
    fields = [message.database, message.original_id, message.message_id, message.name]
    if url is not None:
        fields.append(url)
    payload = _KINDS[kind] + bytes([VERSION]) + _ISSUED.pack(issued) + tokens.pack_fields(fields)
    return tokens.seal(signing_key, _CONTEXT, payload)


def read_token(keys: KeyRing, kind: Kind, token: str) -> TrackingTarget | None:
    """The target of a genuine `kind` token; None for anything forged, altered, truncated or of the other kind."""
    payload = tokens.opened(keys, _CONTEXT, token, _HEADER)
    if payload is None or payload[:2] != _KINDS[kind] + bytes([VERSION]):
        return None
    (issued,) = _ISSUED.unpack_from(payload, 2)
    fields = tokens.unpack_fields(payload[_HEADER:])
    expected = 5 if kind == "click" else 4
    if fields is None or len(fields) != expected:
        return None
    message = TrackedMessage(*fields[:4])
    url = fields[4] if kind == "click" else None
    if url is not None and not is_trackable(url):
        return None  # signed by us, but never a redirect anywhere other than http(s)
    return TrackingTarget(kind, message, issued, url)


def is_trackable(url: str) -> bool:
    """An absolute http(s) URL without whitespace or control characters, short enough to carry in a token."""
    return _TRACKABLE.fullmatch(url) is not None and len(url.encode("utf-8")) <= MAX_URL_BYTES
