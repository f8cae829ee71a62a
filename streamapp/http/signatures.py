"""Requests one worker forwards to another, signed with the deployment's key ring (SPEC §13).

A worker forwards a request to the worker that owns its partition (streamapp.http.forwarding),
over plain HTTP inside the deployment. The receiver must tell a request a worker forwarded from
one a client sent with `X-Streamapp-Forwarded` set by hand, so the header carries the time of
signing and an HMAC-SHA256, with the keys of `[service] secret_file`, of the method, the
path and query, that time, the SHA-256 of the body, and the caller's headers that travel along
(Authorization, Content-Type, Idempotency-Key):

    X-Streamapp-Forwarded: t=<unix seconds>,s=<64 hex digits>

Every key of the ring verifies (a rotation does not break forwarding between workers that read
the file at different times), and a signature more than FRESHNESS seconds from the receiver's
clock is refused, so a request captured on the wire cannot be replayed later.

Without `secret_file` (loopback development only: streamapp.settings refuses it elsewhere) the
workers of a service share a key derived from what their configuration shares.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from streamapp.settings import KeyRing, Settings

FORWARDED = "X-Streamapp-Forwarded"
#: The caller's headers a forwarded request carries, all of them signed.
PASSED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
#: Seconds a signature stays valid, either side of the receiver's clock.
FRESHNESS = 30
_CONTEXT = b"streamapp-forwarded-v1"
#: Signatures one header may carry: a ring longer than this signs with its first keys only.
MAX_SIGNATURES = 8
_VALUE = re.compile(rf"t=(\d{{1,12}})((?:,s=[0-9a-f]{{64}}){{1,{MAX_SIGNATURES}}})")


class RequestSigner:
    """Signs the requests this worker forwards and checks the ones forwarded to it."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def sign(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """The `X-Streamapp-Forwarded` value for this request."""
        signed_at = int(time.time() if now is None else now)
        message = _message(method, path_qs, signed_at, headers, body)
        keys = [self.keys.signing, *(key for key in self.keys.verifying if key != self.keys.signing)]
        return f"t={signed_at}" + "".join(f",s={_mac(key, message)}" for key in keys[:MAX_SIGNATURES])

    def verifies(
        self, value: str, method: str, path_qs: str, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> bool:
        """Whether `value` is a fresh signature of this request by a key of the ring."""
        match = _VALUE.fullmatch(value.strip())
        if match is None:
            return False
        signed_at, macs = int(match.group(1)), match.group(2).split(",s=")[1:]
        if abs((time.time() if now is None else now) - signed_at) > FRESHNESS:
            return False
        message = _message(method, path_qs, signed_at, headers, body)
        expected = [_mac(key, message) for key in self.keys.verifying]
        matches = [hmac.compare_digest(mac, mine) for mac in macs for mine in expected]
        return any(matches)  # every pair tried: the time taken does not tell which one matched


def forwarding_keys(settings: Settings) -> KeyRing:
    """`[service] secret_file`'s ring; without one (loopback only), a key the service's workers derive alike."""
    if settings.service.keys is not None:
        return settings.service.keys
    shared = [settings.service.id.encode(), *(token.sha256.encode() for token in settings.tokens)]
    return KeyRing.of([hashlib.sha256(b"\0".join([_CONTEXT, b"development", *shared])).digest()])


def _message(method: str, path_qs: str, signed_at: int, headers: Mapping[str, str], body: bytes) -> bytes:
    passed = [f"{name.lower()}:{headers.get(name, '')}" for name in PASSED_HEADERS]
    parts = [method.upper(), path_qs, str(signed_at), hashlib.sha256(body).hexdigest(), *passed]
    return _CONTEXT + b"\0" + "\n".join(parts).encode("utf-8", "surrogateescape")


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()
