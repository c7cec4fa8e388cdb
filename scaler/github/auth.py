"""How the client proves who it is: a GitHub App installation, or a fine-grained token.

A GitHub App signs a short-lived JWT (RS256, with the App's PEM private key) and trades it at
``POST /app/installations/{id}/access_tokens`` for an installation token, valid one hour. The
client caches that token and fetches a new one :data:`TOKEN_REFRESH_MARGIN_S` before its
``expires_at``, so no call is sent with a token about to lapse. A fine-grained personal access
token (``TokenAuth``) is sent as it is.

The private key, JWTs and tokens live in :class:`~scaler.secret.Secret` or key objects: no repr,
str or error message shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from scaler.secret import MASK, Secret

__all__ = [
    "JWT_BACKDATE_S",
    "JWT_LIFETIME_S",
    "TOKEN_REFRESH_MARGIN_S",
    "AppAuth",
    "Auth",
    "InstallationToken",
    "TokenAuth",
    "parse_timestamp",
]

JWT_BACKDATE_S = 60
"""``iat`` is set this far in the past, as GitHub advises, in case our clock is ahead of its."""
JWT_LIFETIME_S = 9 * 60
"""From now to ``exp``: GitHub refuses more than 10 minutes; a minute is kept for clock drift."""
TOKEN_REFRESH_MARGIN_S = 5 * 60
"""An installation token is replaced this long before its ``expires_at``."""


class AppAuth:
    """A GitHub App installation: ``app_id`` (the App's id or client id), its PEM private key,
    and the ``installation_id`` whose token the calls use."""

    __slots__ = ("_key", "app_id", "installation_id")

    def __init__(self, app_id: int | str, private_key: Secret, installation_id: int) -> None:
        if not str(app_id).strip():
            raise ValueError("app_id is required (the GitHub App's id or client id)")
        if installation_id <= 0:
            raise ValueError(f"installation_id={installation_id} must be a positive integer")
        try:
            key: Any = load_pem_private_key(private_key.get_secret_value().encode(), None)
        except (ValueError, TypeError):
            # cryptography's message is generic, but say it ourselves and drop the cause anyway.
            raise ValueError(
                "the GitHub App private key is not an unencrypted PEM private key "
                "(download a new one from the App's settings)"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("the GitHub App private key must be an RSA key (RS256)")
        self._key: RSAPrivateKey = key
        self.app_id = str(app_id).strip()
        self.installation_id = installation_id

    def jwt(self, now: float) -> Secret:
        """A JWT for the App's own endpoints, issued at ``now`` (epoch seconds)."""
        issued = int(now) - JWT_BACKDATE_S
        claims = {"iat": issued, "exp": int(now) + JWT_LIFETIME_S, "iss": self.app_id}
        return Secret(jwt.encode(claims, self._key, algorithm="RS256"))

    def __repr__(self) -> str:
        return (f"AppAuth(app_id={self.app_id!r}, installation_id={self.installation_id}, "
                f"private_key='{MASK}')")


class TokenAuth:
    """A fine-grained personal access token (or any token GitHub takes as ``Bearer``)."""

    __slots__ = ("token",)

    def __init__(self, token: Secret) -> None:
        if not token:
            raise ValueError("the GitHub token is empty")
        self.token = token

    def __repr__(self) -> str:
        return f"TokenAuth(token='{MASK}')"


Auth = AppAuth | TokenAuth


@dataclass(frozen=True, slots=True)
class InstallationToken:
    """An installation token and when it lapses (epoch seconds)."""

    token: Secret
    expires_at: float

    def usable(self, now: float) -> bool:
        """Whether to keep using it: more than the refresh margin before it lapses."""
        return now < self.expires_at - TOKEN_REFRESH_MARGIN_S


def parse_timestamp(text: str) -> float:
    """GitHub's ISO-8601 UTC timestamp (``2016-07-11T22:14:10Z``) as epoch seconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
