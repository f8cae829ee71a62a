"""Bearer tokens, compared by SHA-256; scopes and database restrictions.

Only the token's digest is configured, so a leaked config file does not leak
a usable token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from aiohttp import web

from streamapp.http.errors import ApiError
from streamapp.settings import TokenSettings

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="streamapp"'}


class Authenticator:
    def __init__(self, tokens: tuple[TokenSettings, ...]) -> None:
        self.tokens = tokens

    def identify(self, request: web.Request) -> TokenSettings:
        """The token's settings, or 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "missing bearer token", headers=UNAUTHORIZED_HEADERS)
        return self._known(secret.strip())

    def require_webhook(self, request: web.Request, scope: str) -> TokenSettings:
        """As `require`, for a provider's webhook, which cannot send a bearer header (SPEC §4): the token is
        also taken as the password of HTTP basic authentication, or from `?token=`."""
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                secret = base64.b64decode(secret.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                raise ApiError(401, "malformed basic authorization", headers=UNAUTHORIZED_HEADERS) from None
        elif scheme.lower() != "bearer":
            secret = request.query.get("token", "")
        if not secret.strip():
            raise ApiError(401, "missing token (bearer, basic password or ?token=)", headers=UNAUTHORIZED_HEADERS)
        return _scoped(self._known(secret.strip()), scope)

    def _known(self, secret: str) -> TokenSettings:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        match = None
        for token in self.tokens:
            if hmac.compare_digest(token.sha256, digest):
                match = token
        if match is None:
            raise ApiError(401, "unknown token", headers=UNAUTHORIZED_HEADERS)
        return match

    def require(self, request: web.Request, scope: str) -> TokenSettings:
        """401 without a known token, 403 without the scope."""
        return _scoped(self.identify(request), scope)


def _scoped(token: TokenSettings, scope: str) -> TokenSettings:
    if not token.allows(scope):
        raise ApiError(403, f"token {token.name!r} lacks scope {scope!r}")
    return token


def require_database(token: TokenSettings, database: str) -> None:
    if not token.allows_database(database):
        raise ApiError(403, f"token {token.name!r} may not use database {database!r}")
