"""The leader lease: one scaler replica acts at a time, and a stale leader's writes are refused.

A lease is one Redis key holding ``"{owner}:{token}"`` with a TTL. ``token`` comes from
``INCR {key}:token`` on every acquisition, so it grows strictly across leaders: a replica that lost
the lease (a GC pause, a network partition) and comes back with the same owner name still carries an
old token and fails the check.

Fencing other writes: every Lua script that changes shared state on behalf of the leader starts with
:data:`FENCE_LUA`, takes the lease key as ``KEYS[1]`` and the fence value as ``ARGV[1]``::

    script = FENCE_LUA + " redis.call('SET', KEYS[2], ARGV[2]) return 1"
    try:
        await redis.eval(script, 2, fence.key, other_key, fence.value, "x")
    except redis.exceptions.ResponseError as exc:
        raise_if_fenced(exc)  # -> Fenced
        raise

An empty ``ARGV[1]`` means "unfenced": only :data:`UNFENCED` (a caller that runs alone by
construction, e.g. a test driving one act step) produces it. A missing fence (``None``) always means
"not the leader": :func:`fence_args` raises :class:`Fenced` for it, so no write happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions
import structlog

__all__ = [
    "FENCE_LUA",
    "UNFENCED",
    "Fence",
    "Fenced",
    "LeaderElector",
    "LeaderLease",
    "fence_args",
    "is_fenced_error",
    "raise_if_fenced",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Fence:
    """Proof of leadership at one moment: ``value`` must still be stored at ``key`` for a write."""

    key: str  # the lease key
    value: str  # "{owner}:{token}", what must still be stored at key
    token: int


UNFENCED = Fence(key="", value="", token=0)
"""The fence of a caller that is alone by construction: fenced scripts skip the check for it."""

FENCE_LUA = (
    "if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then "
    "return redis.error_reply('FENCED stale leader') end"
)


class Fenced(Exception):
    """A fenced write was refused: the caller is no longer the leader (raised by callers)."""


def is_fenced_error(exc: BaseException) -> bool:
    """True when ``exc`` is a script's ``FENCED`` answer (a Redis ``ResponseError``)."""
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("FENCED")


def raise_if_fenced(exc: BaseException) -> None:
    """Turn a script's ``FENCED`` error into :class:`Fenced`; do nothing for any other error."""
    if is_fenced_error(exc):
        raise Fenced(str(exc)) from exc


def fence_args(fence: Fence | None, unfenced_key: str) -> tuple[str, str]:
    """``(KEYS[1], ARGV[1])`` for a fenced script; ``(unfenced_key, "")`` for :data:`UNFENCED`.

    ``unfenced_key`` should be a key of the script's own data (any key works, it is not read), so
    the call stays in one hash slot on Redis Cluster.

    Raises:
        Fenced: ``fence`` is ``None``: whoever asks is not the leader (its lease lapsed), and a
            missing fence must never turn into an unchecked write.
    """
    if fence is None:
        raise Fenced("no fence: this replica is not the leader")
    if fence is UNFENCED:
        return unfenced_key, ""
    return fence.key, fence.value


# Take the lease when free; keep (and refresh) it when the stored value is already ours.
# KEYS[1] lease key, KEYS[2] token counter; ARGV[1] owner, ARGV[2] ttl ms, ARGV[3] current value.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if ARGV[3] ~= '' and cur == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ':' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# KEYS[1] lease key; ARGV[1] our value, ARGV[2] ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LeaderLease:
    """A Redis lease with a fencing token.

    ``clock`` is a monotonic clock (seconds). Besides the server-side TTL the lease tracks a local
    deadline, measured from *before* each acquire/renew request was sent: :attr:`fence` turns
    ``None`` as soon as that deadline passes even if Redis cannot be reached, so a partitioned
    leader stops acting on its own before another replica can take over.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        owner: str,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s!r}")
        if not owner or ":" in owner:
            raise ValueError(f"owner must be a non-empty name without ':', got {owner!r}")
        self._redis = redis
        self.key = key
        self.owner = owner
        self.ttl_s = ttl_s
        self._clock = clock
        self._fence: Fence | None = None
        self._deadline = 0.0

    @property
    def token_key(self) -> str:
        """The counter that hands out fencing tokens (never expires, so tokens only grow)."""
        return f"{self.key}:token"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    @property
    def fence(self) -> Fence | None:
        """The current fence, or ``None`` when not leader (or the local deadline has passed)."""
        if self._fence is not None and self._clock() >= self._deadline:
            return None
        return self._fence

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the lease as far as it can tell without asking Redis."""
        return self.fence is not None

    async def try_acquire(self) -> Fence | None:
        """Take the lease if it is free (or already ours: then refresh it). ``None`` if held by
        another replica. A new acquisition always gets a new, higher token."""
        started = self._clock()
        current = self._fence.value if self._fence is not None else ""
        raw = await self._redis.eval(
            _ACQUIRE, 2, self.key, self.token_key, self.owner, self._ttl_ms, current
        )
        if raw is None:
            self._fence = None
            return None
        value = _text(raw)
        token = int(value.rsplit(":", 1)[1])
        self._fence = Fence(key=self.key, value=value, token=token)
        self._deadline = started + self.ttl_s
        return self._fence

    async def renew(self) -> bool:
        """Extend the lease, only if it is still ours. ``False`` (and no fence) otherwise."""
        if self._fence is None:
            return False
        started = self._clock()
        ok = await self._redis.eval(_RENEW, 1, self.key, self._fence.value, self._ttl_ms)
        if not ok:
            self._fence = None
            return False
        self._deadline = started + self.ttl_s
        return True

    async def release(self) -> None:
        """Give the lease up (only if still ours), so another replica can take over at once."""
        fence, self._fence = self._fence, None
        if fence is not None:
            await self._redis.eval(_RELEASE, 1, self.key, fence.value)

    async def check(self, fence: Fence | None = None) -> bool:
        """Whether ``fence`` (default: ours) is still the value stored at its key."""
        fence = fence if fence is not None else self._fence
        if fence is None:
            return False
        raw = await self._redis.get(fence.key)
        return raw is not None and _text(raw) == fence.value


class LeaderElector:
    """Keeps trying to lead: acquire when follower, renew when leader, every ``interval`` seconds
    (default ``ttl/3``), stepping down when a renewal fails or the lease's local deadline passes.

    ``is_leader`` is an :class:`asyncio.Event` set while leading; ``on_change(leading)`` is called
    on every transition. A Redis error is logged and retried on the next step: while the local
    deadline holds the replica stays leader, after it the replica steps down.
    """

    def __init__(
        self,
        lease: LeaderLease,
        *,
        interval: float | None = None,
        on_change: Callable[[bool], Awaitable[None] | None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.lease = lease
        self.interval = interval if interval is not None else lease.ttl_s / 3.0
        self.is_leader = asyncio.Event()
        self.last_error: str | None = None  # why the last round could not reach Redis
        self._on_change = on_change
        self._sleep = sleep
        self._stopping = asyncio.Event()

    @property
    def fence(self) -> Fence | None:
        """The current fence, or ``None`` while not leading."""
        return self.lease.fence if self.is_leader.is_set() else None

    async def _set(self, leading: bool) -> None:
        if leading == self.is_leader.is_set():
            return
        if leading:
            self.is_leader.set()
        else:
            self.is_leader.clear()
        fence = self.lease.fence
        log.info(
            "leader.elected" if leading else "leader.stepped_down",
            owner=self.lease.owner,
            token=fence.token if fence else None,
        )
        if self._on_change is not None:
            result = self._on_change(leading)
            if result is not None:
                await result

    async def step(self) -> bool:
        """One acquire-or-renew round; returns whether this replica leads afterwards."""
        try:
            if self.is_leader.is_set() and self.lease.fence is not None:
                leading = await self.lease.renew()
            else:
                leading = await self.lease.try_acquire() is not None
            self.last_error = None
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("leader.redis_error", owner=self.lease.owner, error=str(exc))
            self.last_error = f"{type(exc).__name__}: {exc}"
            leading = self.lease.fence is not None
        await self._set(leading)
        return leading

    async def run(self) -> None:
        """Loop :meth:`step` until :meth:`stop`; releases the lease on the way out."""
        try:
            while not self._stopping.is_set():
                await self.step()
                sleeper = asyncio.ensure_future(self._sleep(self.interval))
                stopper = asyncio.ensure_future(self._stopping.wait())
                try:
                    await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (sleeper, stopper):
                        t.cancel()
                    for t in (sleeper, stopper):
                        with contextlib.suppress(asyncio.CancelledError):
                            await t
        finally:
            await self._set(False)
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self.lease.release()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (it steps down and releases the lease)."""
        self._stopping.set()
