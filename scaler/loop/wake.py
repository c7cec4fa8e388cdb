"""Wake the reconciler within milliseconds of an enqueue (a doorbell, never the source of truth).

Two sources, both Redis pub/sub:

- keyspace notifications: ``__keyevent@{db}__:rpush`` carries the key of every RPUSH, including
  those made inside dramatiq's dispatch script (enqueue, requeue, maintenance, the promoter's
  promotions). Only ``{ns}:{q}`` keys of watched queues count. ``notify-keyspace-events`` is
  enabled with ``CONFIG SET`` only if needed and only by adding flags (``E`` and ``l``); where
  that is refused (managed Redis) the source is reported unavailable and skipped.
- the channel ``{prefix}:wake``, on which :class:`workers.enqueue.ScalerMiddleware` publishes
  the queue name after each enqueue (works without any Redis configuration).

Events are debounced lightly and deduplicated per batch. Pub/sub is at-most-once, so after a
reconnect every watched queue is yielded (the caller re-reads everything); callers keep a resync
timer for events lost otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scaler.jobs.keys import QueueKeys, wake_channel

__all__ = ["Waker", "ensure_keyspace_notifications"]

log = logging.getLogger(__name__)

_NEEDED = "El"  # keyevent notifications, list commands


async def ensure_keyspace_notifications(redis: aioredis.Redis) -> bool:
    """Make sure Redis publishes ``rpush`` keyevents, adding flags only if missing.

    Returns False (and logs why) when they are off and cannot be turned on.
    """
    try:
        reply = await redis.config_get("notify-keyspace-events")
        current = _text(reply.get("notify-keyspace-events"))
        missing = [f for f in _NEEDED if f not in current and not (f == "l" and "A" in current)]
        if missing:
            await redis.config_set("notify-keyspace-events", current + "".join(missing))
        return True
    except ResponseError as exc:
        log.warning(
            "keyspace notifications unavailable (%s); relying on %s publishes and resyncs",
            exc,
            "the enqueue middleware's",
        )
        return False


class Waker:
    """Yields the names of watched queues that probably changed: ``async for q in waker``.

    ``ready`` is set once subscribed (and again after each reconnect); ``notifications`` tells
    whether keyspace notifications are in use.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        prefix: str,
        queues: Sequence[str],
        *,
        use_notifications: bool = True,
        debounce_s: float = 0.02,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self.queues = tuple(dict.fromkeys(queues))
        self.channel = wake_channel(prefix)
        self._by_key = {QueueKeys(namespace, prefix, q).ready: q for q in self.queues}
        self._watched = set(self.queues)
        self._use_notifications = use_notifications
        self._debounce_s = debounce_s
        self._max_backoff_s = max_backoff_s
        self.notifications: bool | None = None
        self.ready = asyncio.Event()
        self.reconnects = 0

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    def _keyevent_channel(self) -> str:
        db = int(self._redis.connection_pool.connection_kwargs.get("db", 0) or 0)
        return f"__keyevent@{db}__:rpush"

    def _queue_of(self, message: dict[str, Any]) -> str | None:
        channel = _text(message.get("channel"))
        data = _text(message.get("data"))
        if channel == self.channel:
            return data if data in self._watched else None
        return self._by_key.get(data)

    async def _run(self) -> AsyncIterator[str]:
        backoff = 0.05
        connected_before = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                if self._use_notifications and self.notifications is None:
                    self.notifications = await ensure_keyspace_notifications(self._redis)
                channels = [self.channel]
                if self._use_notifications and self.notifications:
                    channels.append(self._keyevent_channel())
                await pubsub.subscribe(*channels)
                self.ready.set()
                if connected_before:
                    self.reconnects += 1
                    for q in self.queues:
                        yield q
                connected_before = True
                backoff = 0.05
                while True:
                    for q in await self._next_batch(pubsub):
                        yield q
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.ready.clear()
                log.warning("wake subscription lost (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
            finally:
                await _close_quietly(pubsub)

    async def _next_batch(self, pubsub: Any) -> list[str]:
        batch: dict[str, None] = {}
        while not batch:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and (q := self._queue_of(message)) is not None:
                batch[q] = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._debounce_s
        while (left := deadline - loop.time()) > 0:
            message = await pubsub.get_message(timeout=left)
            if message is not None and (q := self._queue_of(message)) is not None:
                batch[q] = None
        return list(batch)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception:  # the connection is already broken; nothing left to release
        log.debug("closing a broken pubsub failed", exc_info=True)
