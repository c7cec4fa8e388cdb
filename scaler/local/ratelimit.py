"""Fly's published rate limits, enforced per (action, scope) with the shared token buckets."""

from __future__ import annotations

from collections.abc import Callable

from scaler.fly.limits import LocalGovernor, limit_for

__all__ = ["RateLimiter"]


class RateLimiter:
    """Fly's own buckets per (action, scope) (no client slack), driven by an injectable clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets = LocalGovernor(clock=clock, limits=limit_for)

    def check(self, action: str, scope: str) -> float:
        """Take a token; 0.0 if allowed, else the seconds until one is available."""
        return self._buckets.bucket(action, scope).try_take(self._clock())
