"""Rate governors against a real Redis, driven by a fake clock (no real sleeps)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from scaler.fly.limits import Limit, limit_for
from scaler.loop.governor import MemoryGovernor, RateGovernor, RedisGovernor, make_governor

CREATE = "Machines_create"  # 1/s, burst 3
SHOW = "Machines_show"  # 5/s, burst 10
APP = "app:my-jobs"


class FakeTime:
    """A clock and a sleep that advances it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    yield client
    await client.aclose()


def pair(r: aioredis.Redis, prefix: str, t: FakeTime) -> tuple[RedisGovernor, RedisGovernor]:
    return (
        RedisGovernor(r, prefix, clock=t, sleep=t.sleep, limits=limit_for),
        RedisGovernor(r, prefix, clock=t, sleep=t.sleep, limits=limit_for),
    )


async def takes(g: RateGovernor, n: int, action: str = CREATE, scope: str = APP) -> list[bool]:
    return [await g.try_acquire(action, scope) for _ in range(n)]


async def test_two_governors_share_one_budget(aredis: aioredis.Redis, redis_prefix: str) -> None:
    t = FakeTime()
    a, b = pair(aredis, redis_prefix, t)
    assert await takes(a, 2) + await takes(b, 1) == [True, True, True]
    assert await takes(a, 1) + await takes(b, 1) == [False, False]
    t.now += 1.0
    assert await takes(b, 1) + await takes(a, 1) == [True, False]
    # other scopes and actions have their own buckets
    assert await takes(a, 1, scope="app:other") == [True]
    assert await takes(a, 10, action=SHOW) == [True] * 10
    assert await a.try_acquire(SHOW, APP) is False


async def test_acquire_waits_about_one_second_per_call_in_total(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    t = FakeTime()
    a, b = pair(aredis, redis_prefix, t)
    start = t.now
    waits = [await g.acquire(CREATE, APP) for g in (a, b, a, b, a, b)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert all(w == pytest.approx(1.0) for w in waits[3:])
    assert t.now - start == pytest.approx(3.0)
    assert a.stats.wait_seconds_total[CREATE] + b.stats.wait_seconds_total[CREATE] == (
        pytest.approx(3.0)
    )
    assert a.stats.waiting[CREATE] == 0


async def test_available_reports_tokens_without_taking(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    t = FakeTime()
    a, b = pair(aredis, redis_prefix, t)
    assert await a.available(CREATE, APP) == 3.0
    await b.try_acquire(CREATE, APP)
    assert await a.available(CREATE, APP) == pytest.approx(2.0)
    assert await a.available(CREATE, APP) == pytest.approx(2.0)
    t.now += 0.5
    assert await a.available(CREATE, APP) == pytest.approx(2.5)


async def test_penalize_slows_every_replica_and_halves_the_rate(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    t = FakeTime()
    a, b = pair(aredis, redis_prefix, t)
    a.penalize(CREATE, APP, 4.0)  # a 429 seen by replica a
    assert await a.try_acquire(CREATE, APP) is False  # waits for the penalty to land first
    assert await b.try_acquire(CREATE, APP) is False
    assert await b.available(CREATE, APP) < 0
    assert await b.rate_factor(CREATE, APP) == pytest.approx(0.5)
    assert a.stats.penalties_total[CREATE] == 1
    waited = await b.acquire(CREATE, APP)
    # drained for 4s at half rate (-2 tokens), then one token at 0.5/s: 6s by the estimate
    assert waited == pytest.approx(6.0)
    # meanwhile the rate recovered linearly from 0.5 to 0.8: refill 6s * 0.65 = 3.9 tokens
    assert await b.rate_factor(CREATE, APP) == pytest.approx(0.8)
    assert await b.available(CREATE, APP) == pytest.approx(-2 + 3.9 - 1)
    # additive recovery: 0.05 of the rate per second, full speed ~10s after the 429
    t.now += 20.0
    assert await a.rate_factor(CREATE, APP) == 1.0
    assert await takes(a, 3) == [True, True, True]


async def test_penalize_without_retry_after_drains_one_interval(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    t = FakeTime()
    a, _ = pair(aredis, redis_prefix, t)
    await a.penalize_async(SHOW, "machine:m1", None)
    # one interval of the published rate (0.2s) at half rate: -0.5 token
    assert await a.available(SHOW, "machine:m1") == pytest.approx(-0.5)


async def test_repeated_429s_back_off_to_the_floor(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    t = FakeTime()
    a, _ = pair(aredis, redis_prefix, t)
    for _ in range(6):
        await a.penalize_async(CREATE, APP, 0.0)
    assert await a.rate_factor(CREATE, APP) == pytest.approx(0.125)


async def test_idle_buckets_expire(aredis: aioredis.Redis, redis_prefix: str) -> None:
    t = FakeTime()
    a, _ = pair(aredis, redis_prefix, t)
    key = a.key(CREATE, APP)
    assert key == f"{redis_prefix}:rl:{CREATE}:{APP}"
    await takes(a, 1)
    # one token short at 1/s: full again in 1s; the key lives that long plus a second
    assert 1000 < await aredis.pttl(key) <= 2000
    await a.penalize_async(CREATE, APP, 2.0)
    # recovering the rate takes longer than refilling: the key must outlive it
    assert await aredis.pttl(key) > 9000
    await aredis.delete(key)  # what expiry does, without waiting for it
    assert await a.available(CREATE, APP) == 3.0
    assert await a.rate_factor(CREATE, APP) == 1.0


async def test_redis_time_is_the_default_clock(aredis: aioredis.Redis, redis_prefix: str) -> None:
    g = RedisGovernor(aredis, redis_prefix, limits=limit_for)
    assert await takes(g, 4) == [True, True, True, False]


async def test_falls_back_to_local_budget_when_redis_is_down(
    dead_redis: aioredis.Redis, redis_prefix: str
) -> None:
    t = FakeTime()
    g = RedisGovernor(
        dead_redis, redis_prefix, clock=t, sleep=t.sleep, monotonic=t, limits=limit_for
    )
    with capture_logs() as logs:
        assert await takes(g, 4) == [True, True, True, False]
        assert await g.available(CREATE, APP) < 1
        assert await g.acquire(CREATE, APP) > 0  # still throttled, never free
        g.penalize(CREATE, APP, 5.0)
        assert await g.available(CREATE, APP) < -4
    assert g.using_fallback
    assert [e["event"] for e in logs].count("governor.redis_unavailable") == 1


async def test_recovers_when_redis_returns(
    aredis: aioredis.Redis, dead_redis: aioredis.Redis, redis_prefix: str
) -> None:
    t = FakeTime()
    g = RedisGovernor(
        dead_redis, redis_prefix, clock=t, sleep=t.sleep, monotonic=t, limits=limit_for
    )
    assert await g.try_acquire(CREATE, APP)
    assert g.using_fallback
    g._redis = aredis
    g._script = aredis.register_script(g._script.script)
    t.now += 31.0
    with capture_logs() as logs:
        assert await g.try_acquire(CREATE, APP)
    assert not g.using_fallback
    assert "governor.redis_recovered" in [e["event"] for e in logs]
    assert await aredis.exists(g.key(CREATE, APP))


async def test_on_wait_callback(aredis: aioredis.Redis, redis_prefix: str) -> None:
    t = FakeTime()
    seen: list[tuple[str, float]] = []
    g = RedisGovernor(
        aredis, redis_prefix, clock=t, sleep=t.sleep, on_wait=lambda a, s: seen.append((a, s)),
        limits=limit_for,
    )
    for _ in range(4):
        await g.acquire(CREATE, APP)
    assert [a for a, _ in seen] == [CREATE] and seen[0][1] == pytest.approx(1.0)


async def test_memory_governor_has_the_same_surface() -> None:
    t = FakeTime()
    seen: list[tuple[str, float]] = []
    g = MemoryGovernor(clock=t, sleep=t.sleep, on_wait=lambda a, s: seen.append((a, s)),
                       limits=limit_for)
    assert await g.available(CREATE, APP) == 3.0
    assert await takes(g, 4) == [True, True, True, False]
    assert await g.acquire(CREATE, APP) == pytest.approx(1.0)
    g.penalize(CREATE, APP, 2.0)
    assert await g.available(CREATE, APP) < 0
    assert g.stats.penalties_total[CREATE] == 1
    assert [a for a, _ in seen] == [CREATE] and seen[0][1] == pytest.approx(1.0)
    assert g.stats.waiting[CREATE] == 0


def test_custom_limits_and_bad_parameters(aredis: aioredis.Redis) -> None:
    assert limit_for(CREATE) == Limit(1.0, 3)
    with pytest.raises(ValueError, match="decrease"):
        RedisGovernor(aredis, "p", decrease=0)


async def test_make_governor(aredis: aioredis.Redis) -> None:
    assert isinstance(make_governor(True, aredis, "p"), RedisGovernor)
    assert isinstance(make_governor(False, aredis, "p"), MemoryGovernor)
    assert isinstance(make_governor(True, None, "p"), MemoryGovernor)


async def test_default_limits_keep_one_burst_token_of_slack(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    # Fly's create bucket holds 3; the shared governor spends 2 at once, then 1/s.
    t = FakeTime()
    g = RedisGovernor(aredis, redis_prefix, clock=t, sleep=t.sleep)
    assert await takes(g, 3) == [True, True, False]
    m = MemoryGovernor(clock=t, sleep=t.sleep)
    assert await takes(m, 3) == [True, True, False]


async def test_a_local_governor_forgets_full_buckets_and_keeps_the_spent_ones() -> None:
    """Most scopes are per machine, and per-job machines come and go: a bucket that has refilled
    is the same as a new one and is dropped, one still short of its burst is kept."""
    from scaler.fly.limits import PRUNE_MIN

    clock = FakeTime()
    governor = MemoryGovernor(clock=clock, sleep=clock.sleep)
    spent = "machine:kept"
    for _ in range(3):
        await governor.acquire(CREATE, spent)  # burst 3: empty now
    for i in range(PRUNE_MIN - 1):  # PRUNE_MIN buckets in all: the next new one prunes
        await governor.acquire("Machines_start", f"machine:{i}")
    clock.now += 1.5  # the starts' buckets (burst 2 here) are full again; `spent` has 1.5 of 3
    await governor.acquire("Machines_start", "machine:new")
    assert set(governor._buckets) == {(CREATE, spent), ("Machines_start", "machine:new")}
    # The bucket kept still holds what was spent: two more takes wait for the second one.
    assert await governor.acquire(CREATE, spent) == 0.0
    assert await governor.acquire(CREATE, spent) == pytest.approx(0.5)
