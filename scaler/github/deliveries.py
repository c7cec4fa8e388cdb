"""Redelivery dedupe: a delivery id is acted on once, however often GitHub sends it.

GitHub does not retry a failed delivery by itself, but anyone with admin rights can redeliver
one (in the UI, or with the REST API from a script that redelivers failures), and the copy carries
the same ``X-GitHub-Delivery`` id, even when the first copy was acted on but answered too late
(GitHub records a delivery not answered within 10 s as failed).
:meth:`Deliveries.seen` records the id with ``SET NX`` and a TTL in one atomic command: exactly one
caller gets ``False`` ("new, act on it"), every other ``True``. The TTL (:data:`DEFAULT_TTL_S`,
three days) is github.com's redelivery window, so an id is never forgotten while it can still come
back; GitHub Enterprise Server keeps deliveries for seven days (pass ``ttl_s``). A key is about
100 bytes: four deliveries per job, 10,000 jobs a day, is about 12 MB at steady state.

When acting on a new delivery fails before anything durable happened, :meth:`Deliveries.forget`
lets the next redelivery through (otherwise a failed delivery would be "seen" and lost).

Key (prefix ``p``): ``{p}:github:delivery:{delivery_id}`` STRING, the time it was first seen (ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

__all__ = ["DEFAULT_TTL_S", "Deliveries", "delivery_key"]

DEFAULT_TTL_S = 3 * 24 * 3600


def delivery_key(prefix: str, delivery_id: str) -> str:
    """The Redis key recording ``delivery_id``."""
    return f"{prefix}:github:delivery:{delivery_id}"


class Deliveries:
    """Which delivery ids were seen, in Redis under ``prefix``, shared by every replica."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s={ttl_s} must be positive")
        if not prefix:
            raise ValueError("a key prefix is required")
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._clock = clock

    async def seen(self, delivery_id: str) -> bool:
        """``False`` the first time ``delivery_id`` is offered (it is recorded), ``True`` after."""
        if not delivery_id:
            raise ValueError("a delivery id is required")
        stored = await self._client.set(
            delivery_key(self._prefix, delivery_id),
            int(self._clock() * 1000),
            nx=True,
            ex=self._ttl_s,
        )
        return not stored

    async def forget(self, delivery_id: str) -> None:
        """Let ``delivery_id`` be acted on again (acting on it failed; a redelivery will come)."""
        await self._client.delete(delivery_key(self._prefix, delivery_id))
