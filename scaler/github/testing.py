"""Helpers for tests of the GitHub pieces: a throwaway App key and a fake wall clock (the
fixtures that use them are in :mod:`scaler.github.pytest_plugin`)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scaler.secret import Secret

__all__ = ["AppKey", "FakeClock", "make_app_key"]


@dataclass(frozen=True)
class AppKey:
    """A GitHub App's key pair: the PEM the App owner downloads, and its public half."""

    private_pem: Secret
    public: rsa.RSAPublicKey


class FakeClock:
    """A wall clock that moves only when told, or when something sleeps on it."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the wait and let that much time pass, without waiting."""
        self.sleeps.append(seconds)
        self.now += seconds


def make_app_key() -> AppKey:
    """A new 2048-bit RSA key (the size GitHub issues)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return AppKey(Secret(pem), key.public_key())
