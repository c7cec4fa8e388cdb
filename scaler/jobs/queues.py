"""Queue statistics for every watched dramatiq queue, read in ONE Redis round trip.

Per queue ``q`` in namespace ``ns`` (dramatiq's Redis broker layout) and scaler prefix ``p``:

- ``ready``     = ``LLEN {ns}:{q}``
- ``in_flight`` = ``HLEN {ns}:{q}.msgs - LLEN {ns}:{q}``: fetched by a worker and not yet acked,
  *including* messages claimed for a per-job machine (they left the ready list, kept their body)
- ``delayed``   = ``HLEN {ns}:{q}.DQ.msgs`` (all delayed messages, retries included)
- ``dead``      = ``ZCARD {ns}:{q}.XQ``
- ``claimed``   = ``HLEN {p}:claims:{q}``
- ``oldest_ready_age_s``: ``now - options.enqueued_at`` (stamped by ``workers.enqueue``'s
  middleware) of the head of the ready list, else ``now - message_timestamp``; None when empty.

All O(1) per queue; the head is read with a read-only script so nothing is popped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from scaler.jobs.keys import ENQUEUED_AT_LUA, QueueKeys

__all__ = ["QueueStats", "RoundTrips", "read_queue_stats", "round_trips"]

# KEYS: ready list, msgs hash. Returns the head's enqueue time in ms, or false.
_OLDEST = ENQUEUED_AT_LUA + """
local id = redis.call('LINDEX', KEYS[1], 0)
if not id then return false end
local body = redis.call('HGET', KEYS[2], id)
if not body then return false end
local ok, msg = pcall(cjson.decode, body)
if not ok then return false end
return enqueued_at(msg) or false
"""
_OLDEST_SHA = hashlib.sha1(_OLDEST.encode()).hexdigest()

_PER_QUEUE = 6  # replies per queue in the pipeline


@dataclass(frozen=True)
class QueueStats:
    """What one queue looks like right now (see the module docstring for each count)."""

    queue: str
    ready: int
    delayed: int
    in_flight: int
    dead: int
    claimed: int
    oldest_ready_age_s: float | None


@dataclass
class RoundTrips:
    """Counts Redis round trips made by :func:`read_queue_stats` (tests and the benchmark)."""

    count: int = 0


#: The process-wide counter; pass your own ``RoundTrips`` to isolate a measurement.
round_trips = RoundTrips()


async def read_queue_stats(
    redis: aioredis.Redis,
    namespace: str,
    prefix: str,
    queues: Sequence[str],
    now_ms: int,
    *,
    counter: RoundTrips | None = None,
) -> dict[str, QueueStats]:
    """Read :class:`QueueStats` for every queue in one pipeline (one round trip).

    The oldest-age script is called by SHA; only the first call on a fresh Redis (``NOSCRIPT``)
    costs a second round trip to load it. Redis errors propagate: unknown is not zero.
    """
    counter = counter or round_trips
    if not queues:
        return {}
    replies = await _pipeline(redis, namespace, prefix, queues, counter)
    if any(_is_noscript(r) for r in replies):
        await redis.script_load(_OLDEST)
        counter.count += 1
        replies = await _pipeline(redis, namespace, prefix, queues, counter)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    stats: dict[str, QueueStats] = {}
    for i, q in enumerate(queues):
        ready, msgs, delayed, dead, claimed, head_ms = replies[
            i * _PER_QUEUE : (i + 1) * _PER_QUEUE
        ]
        age = None if head_ms is None else max(0.0, (now_ms - int(head_ms)) / 1000)
        stats[q] = QueueStats(
            queue=q,
            ready=int(ready),
            delayed=int(delayed),
            in_flight=max(0, int(msgs) - int(ready)),
            dead=int(dead),
            claimed=int(claimed),
            oldest_ready_age_s=age,
        )
    return stats


async def _pipeline(
    redis: aioredis.Redis,
    namespace: str,
    prefix: str,
    queues: Sequence[str],
    counter: RoundTrips,
) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            k = QueueKeys(namespace, prefix, q)
            pipe.llen(k.ready)
            pipe.hlen(k.msgs)
            pipe.hlen(k.delayed_msgs)
            pipe.zcard(k.dead)
            pipe.hlen(k.claims)
            pipe.evalsha(_OLDEST_SHA, 2, k.ready, k.msgs)
        counter.count += 1
        return list(await pipe.execute(raise_on_error=False))


def _is_noscript(reply: object) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError) or (
        isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith("NOSCRIPT")
    )
