"""Bearer-token auth of the enqueue API."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.requests import Request

from scaler.http.responses import Problem
from scaler.secret import Secret

__all__ = ["BearerAuth"]


class BearerAuth:
    """Bearer tokens, compared in constant time against every configured token."""

    def __init__(self, tokens: Sequence[Secret]) -> None:
        self._tokens = [t.get_secret_value().encode() for t in tokens if t]

    def __repr__(self) -> str:
        return f"BearerAuth({len(self._tokens)} token(s))"

    def check(self, request: Request) -> None:
        """Return if the request carries a configured token; else raise a 401 (no or malformed
        header) or a 403 (a token matching none)."""
        header = request.headers.get("authorization")
        scheme, _, value = (header or "").partition(" ")
        given = value.strip().encode()
        if scheme.lower() != "bearer" or not given:
            raise Problem(401, "unauthorized", "send 'Authorization: Bearer <token>'",
                          headers={"WWW-Authenticate": 'Bearer realm="fly-scaler"'})
        matched = False
        for token in self._tokens:  # no early exit: timing must not tell which token matched
            matched |= hmac.compare_digest(given, token)
        if not matched:
            raise Problem(403, "forbidden", "the token is not valid for this API")
