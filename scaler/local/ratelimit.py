"""Fly's published rate limits, enforced per (action, scope) with the shared token buckets."""

from __future__ import annotations

from collections.abc import Callable

from scaler.fly.limits import TokenBucket, limit_for

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets per (action, scope), driven by an injectable clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(self, action: str, scope: str) -> float:
        """Take a token; 0.0 if allowed, else the seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.get((action, scope))
        if bucket is None:
            bucket = self._buckets[(action, scope)] = TokenBucket(limit_for(action), now)
        return bucket.try_take(now)
