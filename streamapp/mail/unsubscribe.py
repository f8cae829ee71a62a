"""Unsubscribe tokens: who, which message and when, signed so a link cannot be forged or altered.

A token is the URL-safe base64 (no padding) of

    version (1 byte) | issued (4 bytes) | len+database | len+originalId | len+messageId | HMAC-SHA256[:16]

with `issued` in Unix seconds and 2-byte lengths, all big-endian. 128 bits of MAC are plenty
against forgery and keep the link short (~95 characters). The MAC covers the version byte and
the issue time, and a token must be the canonical encoding of its bytes, so flipping any
character of a valid token invalidates it. A token is valid for TOKEN_LIFETIME after it was
issued (SPEC §6): an old link is a 404, like a forged one.

The keys are the deployment's `KeyRing` (`[service] secret_file`, SPEC §13), the same on
every worker, since any worker may serve `/u/{token}` for a link another worker sent: the
first key signs, every key verifies, so links sent before a rotation keep working. Tokens of
format 1 (no issue time, signed with a per-worker key) are no longer accepted.
"""

from __future__ import annotations

import os
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamapp.mail import tokens
from streamapp.settings import KeyRing, Settings

VERSION = 2
MAC_BYTES = tokens.MAC_BYTES
SECRET_BYTES = 32
#: How long an unsubscribe link works after its message was built (SPEC §6).
TOKEN_LIFETIME = timedelta(days=90)
#: A token issued this far in the future (a signer's clock ahead of ours) is still accepted.
CLOCK_SKEW = timedelta(days=1)
_CONTEXT = b"streamapp-unsubscribe\0"
_ISSUED = struct.Struct(">I")
_HEADER = 1 + _ISSUED.size


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    database: str
    original_id: str
    message_id: str


def make_token(
    signing_key: bytes, database: str, original_id: str, message_id: str, *, issued_at: datetime | None = None
) -> str:
    """The token for one recipient and message, to put in `<public_url>/u/<token>`."""
    issued = int((issued_at or datetime.now(UTC)).timestamp())
    payload = bytes([VERSION]) + _ISSUED.pack(issued) + tokens.pack_fields((database, original_id, message_id))
    return tokens.seal(signing_key, _CONTEXT, payload)


def read_token(keys: KeyRing, token: str, *, now: datetime | None = None) -> UnsubscribeTarget | None:
    """The target of a genuine, unexpired token; None for anything forged, altered, truncated, old or malformed."""
    payload = tokens.opened(keys, _CONTEXT, token, _HEADER)
    if payload is None or payload[0] != VERSION or not _fresh(payload, now or datetime.now(UTC)):
        return None
    fields = tokens.unpack_fields(payload[_HEADER:])
    return UnsubscribeTarget(*fields) if fields is not None and len(fields) == 3 else None


def unsubscribe_keys(settings: Settings) -> KeyRing:
    """The deployment's keys (unsubscribe tokens, message id tags: streamapp.core.ids); without
    `[service] secret_file`, `<data_dir>/unsubscribe.key`.

    Settings refuse a worker off loopback without secret_file, so the per-data-dir key is
    development's only: one worker, or links that only the worker that sent them accepts.
    """
    if settings.service.keys is not None:
        return settings.service.keys
    return KeyRing.of([load_or_create_secret(settings.service.data_dir / "unsubscribe.key")])


def _fresh(payload: bytes, now: datetime) -> bool:
    (issued,) = _ISSUED.unpack_from(payload, 1)
    age = now - datetime.fromtimestamp(issued, UTC)
    return -CLOCK_SKEW <= age <= TOKEN_LIFETIME


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
