"""Bearer tokens, compared by SHA-256; scopes and database restrictions.

Only the token's digest is configured, so a leaked config file does not leak
a usable token.
"""

from __future__ import annotations

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
        digest = hashlib.sha256(secret.strip().encode()).hexdigest()
        match = None
        for token in self.tokens:
            if hmac.compare_digest(token.sha256, digest):
                match = token
        if match is None:
            raise ApiError(401, "unknown token", headers=UNAUTHORIZED_HEADERS)
        return match

    def require(self, request: web.Request, scope: str) -> TokenSettings:
        """401 without a known token, 403 without the scope."""
        token = self.identify(request)
        if not token.allows(scope):
            raise ApiError(403, f"token {token.name!r} lacks scope {scope!r}")
        return token


def require_database(token: TokenSettings, database: str) -> None:
    if not token.allows_database(database):
        raise ApiError(403, f"token {token.name!r} may not use database {database!r}")
