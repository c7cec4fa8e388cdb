"""Regression tests for invariant breaks seen under conditions real Fly produces every day: a
leader whose lease lapsed, slow creates, refused creates, runners of an older launch, and a scaler
clock that disagrees with Fly's. Real Redis; the local Machines API over HTTP where it can play the
fault, httpx.MockTransport where only real Fly answers that way."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.fly.retry import RetryPolicy
from scaler.jobs.claims import ClaimStore, RunnerClaim, claims_key
from scaler.jobs.leader import UNFENCED, Fence
from scaler.local.server import LocalAPIServer
from scaler.loop.governor import MemoryGovernor
from scaler.loop.machines import META_JOB, META_LAUNCH, META_POOL, META_QUEUE, META_SCALER
from scaler.loop.reconciler import Reconciler
from scaler.policy import Destroy
from scaler.telemetry.metrics import Metrics
from tests.scaler_harness import (
    ScalerHarness,
    create_app,
    enqueue,
    eventually,
    fly_client,
    machines,
    make_settings,
    redis_client,
)


def _settings(api_url: str, token: str, redis_url: str, prefix: str, app: str, queue: str,
              **kw: Any) -> Settings:
    return make_settings(api_url=api_url, token=token, redis_url=redis_url, namespace=prefix,
                         prefix=f"{prefix}fs", app=app, queue=queue, **kw)


def _claims(r: redis.Redis, prefix: str, queue: str) -> dict[str, dict[str, Any]]:
    raw = r.hgetall(claims_key(f"{prefix}fs", queue))
    return {k: json.loads(v) for k, v in raw.items()}


# --- a leader without a fence ----------------------------------------------------------------


async def test_a_leader_whose_lease_lapsed_claims_and_creates_nothing(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    # The elector still says "leader" until its next step, but the lease's local deadline has
    # passed, so there is no fence: a missing fence used to mean "unfenced".
    api = fly_client(local_api.url, local_api.token)
    app, queue = create_app(api), f"q{uuid.uuid4().hex[:8]}"
    settings = _settings(local_api.url, local_api.token, redis_url, redis_prefix, app, queue)
    enqueue(redis_url, redis_prefix, f"{redis_prefix}fs", queue, "record", "k", "v")
    fly = AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url)
    rec = Reconciler(settings, fly, aioredis.Redis.from_url(redis_url), MemoryGovernor(),
                     Metrics(), fence=lambda: None, is_leader=lambda: True, list_interval=0.0)
    result = await rec.tick()
    assert result.report is None  # did not act
    assert _claims(redis_client(redis_url), redis_prefix, queue) == {}
    assert machines(api, app, include_deleted=True) == []
    await fly.aclose()


class _Fly429:
    """A Fly that answers every create with 429 (Retry-After 0) and counts them."""

    def __init__(self) -> None:
        self.creates = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/machines"):
            self.creates += 1
            return httpx.Response(429, json={"error": "rate limited"},
                                  headers={"retry-after": "0"})
        return httpx.Response(200, json=[])


async def test_a_create_retrying_429s_stops_when_the_lease_is_lost(
    redis_url: str, redis_prefix: str
) -> None:
    # A leader paused mid-create resumed after another replica took over and still sent its
    # creates, retrying through 429s. Every attempt now checks the fence first.
    fake = _Fly429()
    lease = Fence(key=f"{redis_prefix}:leader", value="me:1", token=1)
    current: list[Fence | None] = [lease]

    async def sleep(_: float) -> None:
        if fake.creates >= 1:
            current[0] = None  # the lease's deadline passed while the create was backing off
        await asyncio.sleep(0)

    fly = AsyncFlyClient("t", transport=httpx.MockTransport(fake), base_url="http://fly",
                         governor=MemoryGovernor(), sleep=sleep,
                         retry=RetryPolicy(max_attempts=20, max_elapsed=60))
    settings = _settings("http://fly", "t", redis_url, redis_prefix, "app", "q")
    r = aioredis.Redis.from_url(redis_url)
    await r.set(lease.key, lease.value)
    enqueue(redis_url, redis_prefix, f"{redis_prefix}fs", "q", "record", "k", "v")
    metrics = Metrics()
    rec = Reconciler(settings, fly, r, MemoryGovernor(), metrics, fence=lambda: current[0],
                     list_interval=0.0)
    await rec.tick()
    await rec.executor.drain(wait_s=5)
    assert fake.creates == 1  # the retry was not sent: the fence was gone
    assert metrics.registry.get_sample_value(
        "fly_scaler_tick_errors_total", {"stage": "fenced"}) == 1.0  # retrieved and counted
    (c,) = _claims(redis_client(redis_url), redis_prefix, "q").values()
    assert c["create_until"] > c["claimed_at"]  # still pending: the next leader waits it out
    await r.aclose()
    await fly.aclose()


async def test_shutdown_records_in_flight_creates_before_it_releases_the_lease(
    local_api_factory: Callable[..., LocalAPIServer], redis_url: str, redis_prefix: str
) -> None:
    # Service.close() released the lease before draining in-flight creates, so their machines
    # were never recorded (the fenced write was refused) and the next leader did not count them.
    api_server = local_api_factory(faults={"Machines_create": {"latency": 3.0}})
    api = fly_client(api_server.url, api_server.token)
    app, queue = create_app(api), f"q{uuid.uuid4().hex[:8]}"
    settings = _settings(api_server.url, api_server.token, redis_url, redis_prefix, app, queue,
                         scaler={"tick_deadline": "0.5s"})  # the create outlives its tick
    r = redis_client(redis_url)
    enqueue(redis_url, redis_prefix, f"{redis_prefix}fs", queue, "sleeper", "k", 5)
    harness = ScalerHarness(settings).start()
    try:
        eventually(lambda: len(_claims(r, redis_prefix, queue)) == 1, timeout=20,
                   what="the job claimed, its create sent")
    finally:
        harness.stop()
    (c,) = _claims(r, redis_prefix, queue).values()
    (m,) = machines(api, app)
    assert c.get("machine_id") == m["id"], "the in-flight create was not recorded"
    assert r.get(f"{redis_prefix}fs:leader") is None  # and the lease was released after it


# --- slow creates and caps ---------------------------------------------------------------------


async def test_slow_creates_never_take_a_pool_past_its_cap(
    local_api_factory: Callable[..., LocalAPIServer], redis_url: str, redis_prefix: str
) -> None:
    # One Launch of n creates counted as one in-flight task, and a create stopped counting two
    # seconds after it was sent even though it had not returned: cap 2 -> 3 live machines.
    api_server = local_api_factory(faults={"Machines_create": {"latency": 6.0}})
    api = fly_client(api_server.url, api_server.token)
    app, queue = create_app(api), f"q{uuid.uuid4().hex[:8]}"
    settings = _settings(api_server.url, api_server.token, redis_url, redis_prefix, app, queue,
                         max_machines=2, scaler={"tick_deadline": "1s"})
    r = redis_client(redis_url)
    for _i in range(5):
        enqueue(redis_url, redis_prefix, f"{redis_prefix}fs", queue, "sleeper", "k", 10)
    fly = AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url)
    rec = Reconciler(settings, fly, aioredis.Redis.from_url(redis_url), MemoryGovernor(),
                     Metrics(), list_interval=0.0)
    most = 0
    until = time.monotonic() + 7
    try:
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):  # a slow observe on a loaded machine
                await rec.tick()
            most = max(most, len(_claims(r, redis_prefix, queue)))
            await asyncio.sleep(0.2)  # the resync interval of this test's loop
        assert most == 2
        assert len(machines(api, app, include_deleted=True)) <= 2
    finally:
        await rec.executor.drain(wait_s=10)
        await fly.aclose()


# --- refused creates ---------------------------------------------------------------------------


class _FakeTime:
    """Wall and monotonic clocks that move only when told to (or when something sleeps)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.001)
        await asyncio.sleep(0)


async def test_refused_creates_back_off_and_claim_no_more_than_the_cap(
    redis_url: str, redis_prefix: str
) -> None:
    # Every create refused for capacity: one claim per cap slot, retried after the grace, then
    # at doubling intervals; never once per tick, never the whole queue.
    clock = _FakeTime()
    creates: list[float] = []

    def fly_handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            creates.append(clock())
            return httpx.Response(412, json={"error": "insufficient resources"})
        return httpx.Response(200, json=[])

    fly = AsyncFlyClient("t", transport=httpx.MockTransport(fly_handler), base_url="http://fly",
                         governor=MemoryGovernor(clock=clock, sleep=clock.sleep),
                         retry=RetryPolicy(max_attempts=1), clock=clock, sleep=clock.sleep)
    settings = _settings("http://fly", "t", redis_url, redis_prefix, "app", "q", max_machines=1,
                         scaler={"claim_grace": "1s"})
    for i in range(3):
        enqueue(redis_url, redis_prefix, f"{redis_prefix}fs", "q", "record", "k", f"v{i}")
    rec = Reconciler(settings, fly, aioredis.Redis.from_url(redis_url),
                     MemoryGovernor(clock=clock, sleep=clock.sleep), Metrics(), clock=clock,
                     list_interval=0.0)
    r = redis_client(redis_url)
    for _ in range(60):  # 30 s of ticks every 0.5 s
        await rec.tick()
        await rec.executor.drain(wait_s=5)
        assert len(_claims(r, redis_prefix, "q")) == 1
        clock.t += 0.5
    gaps = [b - a for a, b in itertools.pairwise(creates)]
    assert 4 <= len(creates) <= 6, gaps  # was: once per tick after the first grace
    for n, gap in enumerate(gaps):  # the grace, doubled per failed attempt (+ a tick or a token)
        assert 2.0**n <= gap <= 2.0**n + 1.5, gaps
    assert r.llen(f"{redis_prefix}:q") == 2  # the others wait in the queue, untouched
    await fly.aclose()


# --- runners of an older launch -----------------------------------------------------------------


async def test_a_runner_of_an_older_launch_neither_takes_nor_ends_a_newer_claim(
    redis_url: str, redis_prefix: str
) -> None:
    ns, prefix = redis_prefix, f"{redis_prefix}fs"
    rmid = enqueue(redis_url, ns, prefix, "q", "record", "k", "v")
    del rmid
    r = aioredis.Redis.from_url(redis_url)
    store = ClaimStore(r, ns, prefix)
    [first] = await store.claim("q", "jobs", 1, 1000, UNFENCED)
    # launch 1's machine vanished from the listing: the job went back and was claimed again
    assert await store.give_back("q", first.redis_message_id, "machine_gone", UNFENCED) == (
        "requeued")
    [second] = await store.claim("q", "jobs", 1, 2000, UNFENCED)
    assert second.launch == 2
    sync = redis.Redis.from_url(redis_url)
    old = RunnerClaim(sync, namespace=ns, prefix=prefix, queue="q",
                      redis_message_id=first.redis_message_id, launch=1)
    new = RunnerClaim(sync, namespace=ns, prefix=prefix, queue="q",
                      redis_message_id=first.redis_message_id, launch=2)
    assert not old.mark_running("m-old", 3000)  # the late machine of launch 1 does not run it
    assert new.mark_running("m-new", 3000)
    assert not old.finish("none", 3100)  # nor can it end launch 2's claim
    assert new.finish("ack", 4000)
    await r.aclose()


# --- clock skew ---------------------------------------------------------------------------------


def _fly_with_clock(offset: float, age: float) -> httpx.MockTransport:
    """A Fly whose clock is ``offset`` seconds off ours, listing one machine of ours created
    ``age`` seconds ago (by Fly's clock) that is still booting."""

    def handler(request: httpx.Request) -> httpx.Response:
        fly_now = time.time() + offset
        created = datetime.fromtimestamp(fly_now - age, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = [{
            "id": "m1", "name": "jobs-x-1", "state": "created", "region": "iad",
            "created_at": created, "updated_at": created,
            "config": {"image": "x", "metadata": {
                META_SCALER: "fly-scaler", META_POOL: "jobs", META_JOB: "x", META_QUEUE: "q",
                META_LAUNCH: "1"}},
        }]
        date = format_datetime(datetime.fromtimestamp(fly_now, UTC), usegmt=True)
        return httpx.Response(200, json=body, headers={"date": date})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("offset", "age", "reaped"), [
    (-300.0, 5.0, False),  # Fly 5 min behind: a 5 s old machine looked 305 s old
    (300.0, 60.0, True),  # Fly 5 min ahead: a 60 s old machine looked to be born in 240 s
])
async def test_boot_limits_use_flys_clock_not_ours(
    redis_url: str, redis_prefix: str, offset: float, age: float, reaped: bool
) -> None:
    fly = AsyncFlyClient("t", transport=_fly_with_clock(offset, age), base_url="http://fly",
                         governor=MemoryGovernor())
    settings = _settings("http://fly", "t", redis_url, redis_prefix, "app", "q",
                         extra_pool={"boot_timeout": "20s"})
    rec = Reconciler(settings, fly, aioredis.Redis.from_url(redis_url), MemoryGovernor(),
                     Metrics(), is_leader=lambda: False, list_interval=0.0)
    await rec.tick()  # a first answer gives the clock offset
    result = await rec.tick()
    destroys = [a.reason for a in result.plan.of_type(Destroy)]
    assert destroys == (["boot_timeout"] if reaped else [])
    assert abs(rec.observer.clock_offset - offset) < 2.0
    await fly.aclose()
