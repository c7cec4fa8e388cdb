"""Webhook signatures: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

GitHub signs every delivery with the webhook's secret. :func:`verify` checks it on the raw bytes,
before anything is parsed (a forged body never reaches the JSON parser), with a constant-time
comparison. It raises :class:`SignatureError` whose ``reason`` is one of a small fixed set
(``missing``, ``malformed``, ``mismatch``: fit for a metric label) and whose message never carries
the secret, the expected digest or the body.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from scaler.secret import Secret

__all__ = ["PREFIX", "SIGNATURE_HEADER", "SignatureError", "SignatureReason", "sign", "verify"]

SIGNATURE_HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="
_HEX_DIGITS = frozenset("0123456789abcdef")
_DIGEST_HEX_LENGTH = 64

SignatureReason = Literal["missing", "malformed", "mismatch"]


class SignatureError(Exception):
    """The delivery's signature is missing, malformed or wrong: refuse it (401)."""

    def __init__(self, reason: SignatureReason, message: str) -> None:
        super().__init__(message)
        self.reason: SignatureReason = reason


def _key(secret: Secret) -> bytes:
    value = secret.get_secret_value()
    if not value:
        # An empty key would make every signature computable by anyone.
        raise ValueError("the webhook secret is empty: set one on the GitHub App or webhook")
    return value.encode("utf-8")


def sign(secret: Secret, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body`` (for tests and stand-ins)."""
    return PREFIX + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify(secret: Secret, body: bytes, header: str | None) -> None:
    """Check ``header`` (the ``X-Hub-Signature-256`` value, or ``None`` when absent) against
    ``body``, the exact bytes received; raise :class:`SignatureError` unless it matches."""
    key = _key(secret)
    if header is None or not header.strip():
        raise SignatureError("missing", f"no {SIGNATURE_HEADER} header: the delivery is unsigned")
    value = header.strip()
    if not value.startswith(PREFIX):
        # e.g. the SHA-1 ``sha1=`` of the legacy X-Hub-Signature header: not accepted.
        raise SignatureError("malformed", f"{SIGNATURE_HEADER} must start with {PREFIX!r}")
    given = value[len(PREFIX):].lower()
    if len(given) != _DIGEST_HEX_LENGTH or not _HEX_DIGITS.issuperset(given):
        raise SignatureError(
            "malformed", f"{SIGNATURE_HEADER} must be {PREFIX!r} and 64 hex digits"
        )
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("ascii")):
        raise SignatureError(
            "mismatch", f"{SIGNATURE_HEADER} does not match the body (wrong secret or altered body)"
        )
