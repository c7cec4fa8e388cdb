"""Rate governors: spend Fly's rate-limit budget before every call, shared by all scaler replicas.

:class:`RedisGovernor` keeps one token bucket per (action, scope) in Redis at
``{prefix}:rl:{action}:{scope}``, at :func:`scaler.fly.limits.client_limit_for` (Fly's limits with
one burst token held back). One Lua
script refills the bucket by elapsed time and takes a token, or says how long to wait, atomically;
so any number of replicas share one budget. A bucket key expires once it would be full again (and
fully recovered, see below): an idle bucket costs no memory and a missing bucket means "full".

After a 429 (:meth:`RedisGovernor.penalize`) the bucket is drained for ``retry_after`` seconds
(default one interval, ``1/rate``), so every replica waits, and the bucket's rate is halved
(multiplicative decrease, floor ``min_factor``), then recovers linearly by ``recover_per_s`` of the
published rate per second (additive increase): AIMD, like TCP. A 429 therefore slows everyone down
for a while and never turns into a retry storm.

If Redis cannot be reached the governor falls back to an in-process :class:`MemoryGovernor` (logged
once), retrying Redis every ``retry_redis_after`` seconds: Fly is never called unthrottled.

:class:`MemoryGovernor` is the single-process twin with the same surface (``acquire``,
``penalize``, ``try_acquire``, ``available`` and the stats); :func:`make_governor` picks one from
the settings.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from scaler.fly.limits import Governor, Limit, LocalGovernor, client_limit_for
from scaler.jobs.keys import rate_key

__all__ = [
    "GovernorStats",
    "MemoryGovernor",
    "RateGovernor",
    "RedisGovernor",
    "make_governor",
]

log = structlog.get_logger(__name__)

OnWait = Callable[[str, float], None]


class RateGovernor(Governor, Protocol):
    """The full governor surface: the ``Governor`` protocol plus non-blocking budget queries."""

    async def try_acquire(self, action: str, scope: str) -> bool:
        """Take one token now if there is one; never wait."""
        ...

    async def available(self, action: str, scope: str) -> float:
        """Tokens in the bucket now (negative while a 429 penalty lasts)."""
        ...


class GovernorStats:
    """Counters for metrics: callers waiting now, total seconds waited and 429s, per action.

    ``on_wait(action, seconds)`` is called after every acquire that had to wait.
    """

    def __init__(self, on_wait: OnWait | None = None) -> None:
        self.waiting: defaultdict[str, int] = defaultdict(int)
        self.wait_seconds_total: defaultdict[str, float] = defaultdict(float)
        self.penalties_total: defaultdict[str, int] = defaultdict(int)
        self.on_wait = on_wait

    def waited(self, action: str, seconds: float) -> None:
        """Record one finished acquire."""
        if seconds > 0:
            self.wait_seconds_total[action] += seconds
            if self.on_wait is not None:
                self.on_wait(action, seconds)


class MemoryGovernor(LocalGovernor):
    """In-process token buckets (:class:`LocalGovernor`) with the surface of :class:`RedisGovernor`.

    ``acquire`` reserves a token (possibly in the future) and sleeps until it is usable.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        limits: Callable[[str], Limit] = client_limit_for,
        *,
        on_wait: OnWait | None = None,
        stats: GovernorStats | None = None,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep, limits=limits)
        self.stats = stats if stats is not None else GovernorStats(on_wait)

    async def acquire(self, action: str, scope: str) -> float:
        """Wait until one call of ``action`` on ``scope`` fits; return the seconds waited."""
        self.stats.waiting[action] += 1
        try:
            waited = await super().acquire(action, scope)
        finally:
            self.stats.waiting[action] -= 1
        self.stats.waited(action, waited)
        return waited

    def penalize(self, action: str, scope: str, retry_after: float | None) -> None:
        """Fly answered 429: drain this bucket for ``retry_after`` (or one interval)."""
        self.stats.penalties_total[action] += 1
        super().penalize(action, scope, retry_after)

    async def try_acquire(self, action: str, scope: str) -> bool:
        """Take one token now if there is one; never wait."""
        return self.bucket(action, scope).try_take(self._clock()) == 0.0

    async def available(self, action: str, scope: str) -> float:
        """Tokens in the bucket now (negative while reservations or a penalty are outstanding)."""
        return self.bucket(action, scope).available(self._clock())


# KEYS[1] bucket. ARGV: now ('' = Redis TIME), rate, burst, op (take|peek|drain), drain seconds,
# decrease factor, recovery per second, minimum factor.
# Hash fields: tokens, ts (last refill), f (rate factor after a 429), fts (when f was set).
# Returns {wait seconds, tokens, factor} as strings (Lua numbers would be truncated to integers).
_BUCKET_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local rate, burst, op = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local decrease, recover, min_f = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'f', 'fts')
local f0, fts = tonumber(h[3]), tonumber(h[4])
local function factor(t)
  if not f0 then return 1.0 end
  return math.min(1.0, f0 + math.max(0, t - fts) * recover)
end
-- seconds of full-rate refill between t1 and t2: the integral of the (linear, capped) factor
local function full_rate_seconds(t1, t2)
  if not f0 then return t2 - t1 end
  local total, full_at = 0, fts + (1.0 - f0) / recover
  if t1 < full_at then
    local e = math.min(t2, full_at)
    total = (e - t1) * (factor(t1) + factor(e)) / 2
    t1 = e
  end
  if t2 > t1 then total = total + (t2 - t1) end
  return total
end
local f = factor(now)
local r = rate * f
local tokens, ts = tonumber(h[1]), tonumber(h[2])
if not tokens then tokens = burst; ts = now end
if now > ts then
  tokens = math.min(burst, tokens + full_rate_seconds(ts, now) * rate)
  ts = now
end
local wait = 0
if op == 'take' then
  if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / r end
elseif op == 'drain' then
  f = math.max(min_f, f * decrease)
  r = rate * f
  tokens = math.min(tokens, 0) - tonumber(ARGV[5]) * r
  wait = (1 - tokens) / r
elseif op == 'peek' then
  if tokens < 1 then wait = (1 - tokens) / r end
  return {tostring(wait), tostring(tokens), tostring(f)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
if f < 1.0 then
  if op == 'drain' then redis.call('HSET', KEYS[1], 'f', tostring(f), 'fts', tostring(now)) end
else
  redis.call('HDEL', KEYS[1], 'f', 'fts')
end
local idle = math.max((burst - tokens) / r, (1.0 - f) / recover)
redis.call('PEXPIRE', KEYS[1], math.ceil((idle + 1) * 1000))
return {tostring(wait), tostring(tokens), tostring(f)}
"""

_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class _Answer:
    wait: float
    tokens: float
    factor: float


class RedisGovernor:
    """Token buckets in Redis shared by every replica using the same ``prefix`` (see module doc).

    ``clock``: wall-clock seconds passed into the script; ``None`` (default) uses Redis ``TIME`` so
    replicas with skewed clocks agree. ``sleep`` is injectable for tests. Build the Redis client
    with a short ``socket_connect_timeout`` so an outage is noticed quickly.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        limits: Callable[[str], Limit] = client_limit_for,
        on_wait: OnWait | None = None,
        decrease: float = 0.5,
        recover_per_s: float = 0.05,
        min_factor: float = 0.125,
        retry_redis_after: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < decrease <= 1 or not 0 < min_factor <= 1 or recover_per_s <= 0:
            raise ValueError(
                "decrease and min_factor must be in (0, 1] and recover_per_s must be > 0"
            )
        self._redis = redis
        self.prefix = prefix
        self._clock = clock
        self._sleep = sleep
        self._limits = limits
        self._decrease = decrease
        self._recover = recover_per_s
        self._min_factor = min_factor
        self._retry_after = retry_redis_after
        self._monotonic = monotonic
        self._script = redis.register_script(_BUCKET_LUA)
        self.stats = GovernorStats(on_wait)
        self.fallback = MemoryGovernor(
            clock=clock or monotonic, sleep=sleep, limits=limits, stats=self.stats
        )
        self._down_until: float | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def key(self, action: str, scope: str) -> str:
        """The Redis key of one bucket."""
        return rate_key(self.prefix, action, scope)

    @property
    def using_fallback(self) -> bool:
        """Whether Redis is currently considered down (the local budget is in use)."""
        return self._down_until is not None

    async def _run(self, action: str, scope: str, op: str, seconds: float = 0.0) -> _Answer | None:
        """One script call, or ``None`` when Redis is down (use the fallback)."""
        if self._down_until is not None and self._monotonic() < self._down_until:
            return None
        limit = self._limits(action)
        now = "" if self._clock is None else repr(self._clock())
        args: list[str | int | float] = [now, limit.rate, limit.burst, op, seconds]
        args += [self._decrease, self._recover, self._min_factor]
        try:
            raw = await self._script(keys=[self.key(action, scope)], args=args)
        except _UNREACHABLE as exc:
            if self._down_until is None:
                log.warning(
                    "governor.redis_unavailable",
                    error=str(exc),
                    fallback="in-process rate limits",
                )
            self._down_until = self._monotonic() + self._retry_after
            return None
        if self._down_until is not None:
            log.info("governor.redis_recovered")
            self._down_until = None
        wait, tokens, factor = (float(x) for x in raw)
        return _Answer(wait, tokens, factor)

    async def _settle(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def acquire(self, action: str, scope: str) -> float:
        """Wait (take-or-sleep, re-checking after every sleep so a 429 penalty that lands
        meanwhile is honoured) until a token is granted; return the seconds waited."""
        await self._settle()
        waited = 0.0
        self.stats.waiting[action] += 1
        try:
            while True:
                answer = await self._run(action, scope, "take")
                if answer is None:  # the fallback's own acquire would count this caller twice
                    waited += await LocalGovernor.acquire(self.fallback, action, scope)
                    break
                if answer.wait <= 0:
                    break
                await self._sleep(answer.wait)
                waited += answer.wait
        finally:
            self.stats.waiting[action] -= 1
        self.stats.waited(action, waited)
        return waited

    async def try_acquire(self, action: str, scope: str) -> bool:
        """Take one token now if the shared bucket has one; never wait."""
        await self._settle()
        answer = await self._run(action, scope, "take")
        if answer is None:
            return await self.fallback.try_acquire(action, scope)
        return answer.wait <= 0

    async def available(self, action: str, scope: str) -> float:
        """Tokens in the shared bucket now (negative while a 429 penalty lasts)."""
        await self._settle()
        answer = await self._run(action, scope, "peek")
        if answer is None:
            return await self.fallback.available(action, scope)
        return answer.tokens

    async def rate_factor(self, action: str, scope: str) -> float:
        """The bucket's current fraction of the published rate (1.0 unless recovering from 429)."""
        await self._settle()  # a penalty still being written must count, as in available()
        answer = await self._run(action, scope, "peek")
        return 1.0 if answer is None else answer.factor

    async def penalize_async(self, action: str, scope: str, retry_after: float | None) -> None:
        """:meth:`penalize`, awaited: drain the shared bucket and halve its rate."""
        limit = self._limits(action)
        seconds = retry_after if retry_after and retry_after > 0 else 1.0 / limit.rate
        answer = await self._run(action, scope, "drain", seconds)
        if answer is None:
            LocalGovernor.penalize(self.fallback, action, scope, seconds)
        log.info("governor.penalized", action=action, scope=scope, seconds=seconds)

    def penalize(self, action: str, scope: str, retry_after: float | None) -> None:
        """Fly answered 429: drain this bucket for ``retry_after`` (or one interval) for every
        replica. The Redis update runs in the background; this process's next acquire waits for
        it, so it cannot slip a call in before the penalty lands."""
        self.stats.penalties_total[action] += 1
        task = asyncio.get_running_loop().create_task(
            self.penalize_async(action, scope, retry_after)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def make_governor(
    shared: bool,
    redis: aioredis.Redis | None,
    prefix: str,
    *,
    on_wait: OnWait | None = None,
) -> RateGovernor:
    """``RedisGovernor`` when ``shared`` (``scaler.shared_rate_limits``) and a client is given,
    else ``MemoryGovernor``. ``prefix`` is ``redis.prefix`` from the settings."""
    if shared and redis is not None:
        return RedisGovernor(redis, prefix, on_wait=on_wait)
    return MemoryGovernor(on_wait=on_wait)
