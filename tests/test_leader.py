"""The leader lease with fencing, against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scaler.jobs.leader import (
    FENCE_LUA,
    UNFENCED,
    Fence,
    Fenced,
    LeaderElector,
    LeaderLease,
    fence_args,
    is_fenced_error,
    raise_if_fenced,
)

# A fenced write: set KEYS[2] to ARGV[2] only if the caller still holds the lease.
FENCED_SET = FENCE_LUA + " redis.call('SET', KEYS[2], ARGV[2]) return 1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def expire_now(r: aioredis.Redis, key: str) -> None:
    """What the TTL running out does to the lease key, without waiting for it."""
    await r.delete(key)


async def fenced_set(r: aioredis.Redis, fence: Fence | None, key: str, value: str) -> None:
    fkey, fval = fence_args(fence, key)
    try:
        await r.eval(FENCED_SET, 2, fkey, key, fval, value)
    except redis.exceptions.ResponseError as exc:
        raise_if_fenced(exc)
        raise


async def test_only_one_of_two_acquires(aredis: aioredis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}:leader"
    a = LeaderLease(aredis, key, "a", ttl_s=15)
    b = LeaderLease(aredis, key, "b", ttl_s=15)
    fa = await a.try_acquire()
    fb = await b.try_acquire()
    assert fa is not None and fb is None
    assert fa.value == f"a:{fa.token}" and fa.key == key
    assert (await aredis.get(key)) == fa.value.encode()
    assert a.is_leader and not b.is_leader
    assert 0 < await aredis.pttl(key) <= 15000


async def test_reacquire_by_holder_keeps_token(aredis: aioredis.Redis, redis_prefix: str) -> None:
    a = LeaderLease(aredis, f"{redis_prefix}:leader", "a", ttl_s=15)
    first = await a.try_acquire()
    again = await a.try_acquire()
    assert first == again


async def test_expiry_lets_other_take_over_with_higher_token(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:leader"
    a = LeaderLease(aredis, key, "a", ttl_s=15)
    b = LeaderLease(aredis, key, "b", ttl_s=15)
    fa = await a.try_acquire()
    assert fa is not None
    await expire_now(aredis, key)
    fb = await b.try_acquire()
    assert fb is not None and fb.token > fa.token
    assert await b.check() and not await a.check()
    assert not await a.renew()
    assert a.fence is None


async def test_same_owner_after_expiry_is_still_stale(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    """A restarted replica with the same owner name gets a new token; the old fence is dead."""
    key = f"{redis_prefix}:leader"
    old = LeaderLease(aredis, key, "replica-1", ttl_s=15)
    stale = await old.try_acquire()
    assert stale is not None
    await expire_now(aredis, key)
    new = LeaderLease(aredis, key, "replica-1", ttl_s=15)
    fresh = await new.try_acquire()
    assert fresh is not None and fresh.token > stale.token
    assert not await old.check(stale)
    assert not await old.renew()
    with pytest.raises(Fenced):
        await fenced_set(aredis, stale, f"{redis_prefix}:data", "stale")
    assert await aredis.get(f"{redis_prefix}:data") is None


async def test_fence_lua_refuses_stale_and_accepts_current(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:leader"
    data = f"{redis_prefix}:data"
    a = LeaderLease(aredis, key, "a", ttl_s=15)
    b = LeaderLease(aredis, key, "b", ttl_s=15)
    fa = await a.try_acquire()
    assert fa is not None
    await fenced_set(aredis, fa, data, "from-a")
    assert await aredis.get(data) == b"from-a"
    await expire_now(aredis, key)
    fb = await b.try_acquire()
    assert fb is not None
    with pytest.raises(Fenced, match="FENCED"):
        await fenced_set(aredis, fa, data, "stale-a")
    await fenced_set(aredis, fb, data, "from-b")
    assert await aredis.get(data) == b"from-b"
    # UNFENCED (a caller alone by construction): no lease involved at all.
    await fenced_set(aredis, UNFENCED, data, "dev")
    assert await aredis.get(data) == b"dev"
    # No fence at all means "not the leader": refused before Redis is even asked.
    with pytest.raises(Fenced, match="not the leader"):
        await fenced_set(aredis, None, data, "lapsed")
    assert await aredis.get(data) == b"dev"


async def test_renew_extends_only_while_ours(aredis: aioredis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}:leader"
    clock = FakeClock()
    a = LeaderLease(aredis, key, "a", ttl_s=15, clock=clock)
    assert not await a.renew()  # never acquired
    await a.try_acquire()
    await aredis.pexpire(key, 500)
    assert await a.renew()
    assert await aredis.pttl(key) > 500
    await aredis.set(key, "intruder:999")
    assert not await a.renew()
    assert a.fence is None


async def test_local_deadline_drops_fence_without_redis(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    clock = FakeClock()
    a = LeaderLease(aredis, f"{redis_prefix}:leader", "a", ttl_s=15, clock=clock)
    assert await a.try_acquire() is not None
    clock.now += 14.9
    assert a.fence is not None
    clock.now += 0.1
    assert a.fence is None and not a.is_leader


async def test_release_lets_other_acquire_at_once(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:leader"
    a = LeaderLease(aredis, key, "a", ttl_s=15)
    b = LeaderLease(aredis, key, "b", ttl_s=15)
    await a.try_acquire()
    await a.release()
    assert a.fence is None
    assert await b.try_acquire() is not None
    await a.release()  # not ours: must not delete b's lease
    assert await b.check()


def test_bad_arguments_are_refused() -> None:
    r = aioredis.Redis()
    with pytest.raises(ValueError, match="ttl_s"):
        LeaderLease(r, "k", "a", ttl_s=0)
    with pytest.raises(ValueError, match="owner"):
        LeaderLease(r, "k", "a:b", ttl_s=1)


def test_fenced_error_helpers() -> None:
    assert is_fenced_error(redis.exceptions.ResponseError("FENCED stale leader"))
    assert not is_fenced_error(redis.exceptions.ResponseError("WRONGTYPE"))
    raise_if_fenced(redis.exceptions.ResponseError("WRONGTYPE"))  # no raise
    assert fence_args(UNFENCED, "k") == ("k", "")
    assert fence_args(Fence("L", "a:1", 1), "k") == ("L", "a:1")


async def test_elector_steps_and_steps_down(aredis: aioredis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}:leader"
    changes: list[tuple[str, bool]] = []
    ea = LeaderElector(
        LeaderLease(aredis, key, "a", ttl_s=15), on_change=lambda x: changes.append(("a", x))
    )
    eb = LeaderElector(LeaderLease(aredis, key, "b", ttl_s=15))
    assert ea.interval == pytest.approx(5.0)
    assert await ea.step() and ea.is_leader.is_set() and ea.fence is not None
    assert not await eb.step() and not eb.is_leader.is_set() and eb.fence is None
    assert await ea.step()  # renew
    await expire_now(aredis, key)
    assert await eb.step()
    assert not await ea.step()  # renew fails: step down
    assert not ea.is_leader.is_set()
    assert changes == [("a", True), ("a", False)]


async def test_elector_redis_error_keeps_lead_until_deadline(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    clock = FakeClock()
    lease = LeaderLease(aredis, f"{redis_prefix}:leader", "a", ttl_s=15, clock=clock)
    e = LeaderElector(lease)
    assert await e.step()
    dead = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    lease._redis = dead  # Redis becomes unreachable
    try:
        assert await e.step()  # local deadline still holds
        clock.now += 15
        assert not await e.step()
        assert e.fence is None
    finally:
        await dead.aclose()


async def test_elector_run_and_stop_releases(aredis: aioredis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}:leader"
    e = LeaderElector(LeaderLease(aredis, key, "a", ttl_s=15))
    task = asyncio.create_task(e.run())
    await asyncio.wait_for(e.is_leader.wait(), 5)
    e.stop()
    await asyncio.wait_for(task, 5)
    assert not e.is_leader.is_set()
    assert await aredis.get(key) is None
