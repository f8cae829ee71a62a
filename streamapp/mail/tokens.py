"""The encoding every signed link token shares (unsubscribe, open and click tracking).

A token is the URL-safe base64 (no padding) of `payload | MAC`, the payload a header followed by
length-prefixed UTF-8 fields (2-byte big-endian lengths). Decoding is strict: only the URL-safe
alphabet, and only the canonical encoding of the bytes, so flipping any character of a valid
token changes the bytes the MAC covers. Every key of the ring is tried when verifying, so the
time taken does not say which one matched, and links signed before a rotation keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Iterable

from streamapp.settings import KeyRing

MAC_BYTES = 16
#: Longest token accepted: a click token carries its URL.
MAX_TOKEN_CHARS = 4096
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_TOKEN_CHARS}}}")
_LEN = struct.Struct(">H")
MAX_FIELD_BYTES = 0xFFFF


def mac(key: bytes, context: bytes, payload: bytes) -> bytes:
    """128 bits of HMAC-SHA256 over `context` (one per token kind, so kinds never verify as each other)."""
    return hmac.new(key, context + payload, hashlib.sha256).digest()[:MAC_BYTES]


def seal(key: bytes, context: bytes, payload: bytes) -> str:
    return b64(payload + mac(key, context, payload))


def opened(keys: KeyRing, context: bytes, token: str, min_payload: int) -> bytes | None:
    """The payload of a token made by any key of the ring; None for anything forged, altered or malformed."""
    raw = unb64(token)
    if raw is None or len(raw) < min_payload + MAC_BYTES:
        return None
    payload, tag = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    matches = [hmac.compare_digest(tag, mac(key, context, payload)) for key in keys.verifying]
    return payload if any(matches) else None


def pack_fields(values: Iterable[str]) -> bytes:
    out = []
    for value in values:
        data = value.encode("utf-8")
        if len(data) > MAX_FIELD_BYTES:
            raise ValueError(f"a token field takes at most {MAX_FIELD_BYTES} bytes")
        out.append(_LEN.pack(len(data)) + data)
    return b"".join(out)


def unpack_fields(data: bytes) -> list[str] | None:
    out, pos = [], 0
    try:
        while pos < len(data):
            (size,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if pos + size > len(data):
                return None
            out.append(data[pos : pos + size].decode("utf-8"))
            pos += size
    except (struct.error, UnicodeDecodeError):
        return None
    return out


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(token: str) -> bytes | None:
    """Decode strictly: only the URL-safe alphabet, and only the canonical encoding of the bytes."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token) or len(token) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if b64(raw) == token else None
