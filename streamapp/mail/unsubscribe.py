"""Unsubscribe tokens: who and which message, signed so a link cannot be forged or altered.

A token is the URL-safe base64 (no padding) of

    version (1 byte) | len+database | len+originalId | len+messageId | HMAC-SHA256[:16]

with 2-byte big-endian lengths. 128 bits of MAC are plenty against forgery and keep the link
short (~90 characters). The MAC covers the version byte, and a token must be the canonical
encoding of its bytes, so flipping any character of a valid token invalidates it.

The secret must be the same on every worker of a deployment: any worker may serve `/u/{token}`
for a link another worker sent. `load_or_create_secret` is for a path all workers share (or a
single-worker deployment); otherwise put the same secret file on each worker.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

VERSION = 1
MAC_BYTES = 16
SECRET_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,4096}")
_LEN = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    database: str
    original_id: str
    message_id: str


def make_token(secret: bytes, database: str, original_id: str, message_id: str) -> str:
    """The token for one recipient and message, to put in `<public_url>/u/<token>`."""
    payload = bytes([VERSION]) + b"".join(_field(v) for v in (database, original_id, message_id))
    return _b64(payload + _mac(secret, payload))


def read_token(secret: bytes, token: str) -> UnsubscribeTarget | None:
    """The target of a genuine token; None for anything forged, altered, truncated or malformed."""
    raw = _unb64(token)
    if raw is None or len(raw) < 1 + MAC_BYTES or raw[0] != VERSION:
        return None
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    fields = _fields(payload[1:])
    return UnsubscribeTarget(*fields) if fields is not None and len(fields) == 3 else None


def load_or_create_secret(path: Path) -> bytes:
    """The secret in `path`, created once (32 random bytes, mode 0600) if it does not exist.

    Creation is atomic even when several workers start at once on a shared volume: the secret
    is written to a private temporary file and hard-linked into place, which fails if another
    process won the race, and then everyone reads the winner's secret.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(SECRET_BYTES))
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_bytes()
    if len(secret) < 16:
        raise ValueError(f"{path}: an unsubscribe secret needs at least 16 bytes, found {len(secret)}")
    return secret


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"streamapp-unsubscribe\0" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def _field(value: str) -> bytes:
    data = value.encode("utf-8")
    return _LEN.pack(len(data)) + data


def _fields(data: bytes) -> list[str] | None:
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(token: str) -> bytes | None:
    """Decode strictly: only the URL-safe alphabet, and only the canonical encoding of the bytes."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token) or len(token) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == token else None
