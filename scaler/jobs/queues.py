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

All O(1) per queue, read by one read-only script (nothing is popped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions as redis_exceptions

from scaler.jobs.keys import ENQUEUED_AT_LUA, QueueKeys

__all__ = ["QueueStats", "RoundTrips", "read_queue_stats", "round_trips"]

# KEYS: per queue, its ready list, bodies hash, delayed bodies hash, dead-letter zset, claims
# hash. Returns one string of six integers per queue (head's enqueue ms, -1 when none): one reply
# to parse instead of six per queue (a hundred queues as a pipeline cost ~5 ms of client CPU).
_STATS = ENQUEUED_AT_LUA + """
local out = {}
for i = 1, #KEYS, 5 do
  local ready = redis.call('LLEN', KEYS[i])
  local head = -1
  local id = redis.call('LINDEX', KEYS[i], 0)
  if id then
    local body = redis.call('HGET', KEYS[i + 1], id)
    if body then
      local ok, msg = pcall(cjson.decode, body)
      if ok then head = enqueued_at(msg) or -1 end
    end
  end
  out[#out + 1] = string.format('%d %d %d %d %d %d', ready, redis.call('HLEN', KEYS[i + 1]),
    redis.call('HLEN', KEYS[i + 2]), redis.call('ZCARD', KEYS[i + 3]),
    redis.call('HLEN', KEYS[i + 4]), head)
end
return table.concat(out, ' ')
"""
_STATS_SHA = hashlib.sha1(_STATS.encode()).hexdigest()

_PER_QUEUE = 6  # integers per queue in the script's reply


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
    """Read :class:`QueueStats` for every queue with one read-only script call (one round trip).

    The script is called by SHA; only the first call on a fresh Redis (``NOSCRIPT``) costs two
    more round trips to load it. Redis errors propagate: unknown is not zero.
    """
    counter = counter or round_trips
    if not queues:
        return {}
    keys: list[str] = []
    for q in queues:
        k = QueueKeys(namespace, prefix, q)
        keys += (k.ready, k.msgs, k.delayed_msgs, k.dead, k.claims)
    counter.count += 1
    try:
        reply = await redis.evalsha(_STATS_SHA, len(keys), *keys)
    except redis_exceptions.NoScriptError:
        await redis.script_load(_STATS)
        counter.count += 2
        reply = await redis.evalsha(_STATS_SHA, len(keys), *keys)
    numbers = [int(n) for n in reply.split()]
    if len(numbers) != _PER_QUEUE * len(queues):
        raise redis_exceptions.ResponseError(
            f"queue stats: {len(numbers)} numbers for {len(queues)} queues")
    stats: dict[str, QueueStats] = {}
    for i, q in enumerate(queues):
        ready, msgs, delayed, dead, claimed, head_ms = numbers[
            i * _PER_QUEUE : (i + 1) * _PER_QUEUE
        ]
        age = None if head_ms < 0 else max(0.0, (now_ms - head_ms) / 1000)
        stats[q] = QueueStats(
            queue=q,
            ready=ready,
            delayed=delayed,
            in_flight=max(0, msgs - ready),
            dead=dead,
            claimed=claimed,
            oldest_ready_age_s=age,
        )
    return stats
