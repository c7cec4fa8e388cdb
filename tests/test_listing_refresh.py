"""Slow listings are refreshed in the background: the tick plans on the newest listing read while
it is younger than ``max_list_age``, the overlay's rules still hold (a listing is taken when its
request was sent), a failed refresh makes the app unknown (never an empty listing), and a listing
too old is waited for. Fly is an httpx.MockTransport whose answers the test releases; Redis is
real."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bench.common import UnlimitedGovernor
from scaler.fly.client import AsyncFlyClient
from scaler.fly.retry import RetryPolicy
from scaler.jobs.claims import ClaimStore
from scaler.jobs.leader import Fence
from scaler.loop.machines import META_POOL, META_SCALER
from scaler.loop.observe import Observer
from scaler.loop.overlay import InFlight, Overlay
from scaler.loop.reconciler import Reconciler
from scaler.telemetry.metrics import Metrics
from tests.scaler_harness import make_settings


def _machine(mid: str) -> dict[str, Any]:
    return {"id": mid, "name": f"w-{mid}", "state": "started", "region": "ord",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:01Z",
            "config": {"metadata": {META_SCALER: "fly-scaler", META_POOL: "workers"}}}


@dataclass
class _Fly:
    """Answers each list call with the next scripted answer once the test releases it."""

    answers: list[tuple[int, list[dict[str, Any]]]] = field(default_factory=list)
    released: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    calls: int = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        await self.released.acquire()
        status, machines = self.answers.pop(0)
        return httpx.Response(status, content=json.dumps(machines).encode())

    def answer(self, machines: list[dict[str, Any]], status: int = 200) -> None:
        self.answers.append((status, machines))
        self.released.release()


@pytest.fixture
async def world(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[Observer, _Fly,
                                                                          list[float]]]:
    pools = [{"name": "workers", "mode": "worker", "app": "app", "queues": ["q"],
              "image": "local/test:latest", "max_machines": 10}]
    settings = make_settings(api_url="http://fly", token="t", redis_url=redis_url,
                             namespace=redis_prefix, prefix=f"{redis_prefix}fs", app="app",
                             queue="q", pools=pools)
    fly = _Fly()
    client = AsyncFlyClient("t", transport=httpx.MockTransport(fly.handler),
                            base_url="http://fly", governor=UnlimitedGovernor(),
                            retry=RetryPolicy(max_attempts=1))
    redis = aioredis.Redis.from_url(redis_url)
    clock = [1000.0]
    observer = Observer(
        settings, client, redis, ClaimStore(redis, redis_prefix, f"{redis_prefix}fs"),
        UnlimitedGovernor(), overlay=Overlay(), inflight=InFlight(consistency_grace=2.0),
        clock=lambda: clock[0], list_interval=0.0, max_list_age=5.0, slow_list_s=0.0,
    )
    try:
        yield observer, fly, clock
    finally:
        await observer.aclose()
        await client.aclose()
        await redis.aclose()


def _ids(obs: Any) -> list[str] | None:
    machines = obs.machines_by_app["app"]
    return None if machines is None else [m.id for m in machines]


async def test_the_tick_plans_on_the_newest_listing_while_a_slow_refresh_runs(
    world: tuple[Observer, _Fly, list[float]],
) -> None:
    observer, fly, clock = world
    fly.answer([_machine("m1")])
    assert _ids(await observer.observe()) == ["m1"]  # nothing read yet: the tick waits
    # A create returns after the next refresh was sent, and the refresh does not show it.
    (key,) = observer.inflight.reserve("workers", "app", 1000.5, ["w-new"])
    clock[0] = 1001.0
    second = await observer.observe()  # a refresh is sent at 1001.0 and not answered yet
    assert _ids(second) == ["m1"] and fly.calls == 2
    assert second.inflight == {"workers": 1}
    observer.inflight.returned(key, "m-new", 1001.2)
    fly.answer([_machine("m1"), _machine("m2")])
    await asyncio.sleep(0.05)  # the refresh ends in the background
    clock[0] = 1004.0
    third = await observer.observe()
    assert _ids(third) == ["m1", "m2"]  # the newest listing read (sent at 1001.0)
    # taken when its request was sent (1001.0), before the create returned (1001.2): it cannot
    # tell the machine is gone, so it still counts, although 2 s have passed since the return
    assert third.inflight == {"workers": 1}
    assert observer.oldest_listing == 1001.0 and observer.listings_taken == {"app": 1001.0}
    fly.answer([_machine("m1"), _machine("m2"), _machine("m-new")])
    await asyncio.sleep(0.05)
    clock[0] = 1005.0
    fourth = await observer.observe()  # the refresh sent at 1004.0 shows the new machine
    assert _ids(fourth) == ["m1", "m2", "m-new"] and fourth.inflight == {"workers": 0}


async def test_a_failed_refresh_makes_the_app_unknown_never_empty(
    world: tuple[Observer, _Fly, list[float]],
) -> None:
    observer, fly, clock = world
    fly.answer([_machine("m1")])
    assert _ids(await observer.observe()) == ["m1"]
    clock[0] = 1001.0
    assert _ids(await observer.observe()) == ["m1"]  # the refresh runs in the background
    fly.answer([], status=503)
    await asyncio.sleep(0.05)
    clock[0] = 1002.0
    failed = await observer.observe()
    assert _ids(failed) is None and "fly:app" in observer.unknown  # unknown, not zero machines
    assert observer.listings_taken == {}  # no age for a listing that is unknown
    # nothing older is kept: the next tick waits for a listing
    task = asyncio.create_task(observer.observe())
    await asyncio.sleep(0.05)
    assert not task.done()
    fly.answer([_machine("m1")])
    assert _ids(await task) == ["m1"] and "fly:app" not in observer.unknown


async def test_a_listing_older_than_max_list_age_is_waited_for_and_unknown_if_it_fails(
    world: tuple[Observer, _Fly, list[float]],
) -> None:
    observer, fly, clock = world
    fly.answer([_machine("m1")])
    assert _ids(await observer.observe()) == ["m1"]
    clock[0] = 1001.0
    assert _ids(await observer.observe()) == ["m1"]  # a refresh in flight, not answered
    clock[0] = 1006.0  # the listing read is 6 s old now: the tick waits for the refresh
    task = asyncio.create_task(observer.observe())
    await asyncio.sleep(0.05)
    assert not task.done()
    fly.answer([_machine("m1"), _machine("m2")])
    assert _ids(await task) == ["m1", "m2"]  # what was waited for is used, however long it took
    assert observer.oldest_listing == 1001.0
    clock[0] = 1006.5  # that listing was sent 5.5 s ago: the next tick waits again
    task = asyncio.create_task(observer.observe())
    await asyncio.sleep(0.05)
    assert not task.done()
    fly.answer([], status=500)
    assert _ids(await task) is None and "fly:app" in observer.unknown


async def test_a_new_leadership_waits_for_listings_sent_after_it(
    world: tuple[Observer, _Fly, list[float]],
) -> None:
    observer, fly, clock = world
    fly.answer([_machine("m1")])
    assert _ids(await observer.observe()) == ["m1"]
    clock[0] = 1001.0
    assert _ids(await observer.observe()) == ["m1"]  # a refresh sent at 1001.0 in flight
    observer.forget_listings()  # e.g. the lease was lost and won again: another leader acted
    clock[0] = 1002.0
    task = asyncio.create_task(observer.observe())
    await asyncio.sleep(0.05)
    assert not task.done()  # nothing kept: the tick waits for a listing sent after
    assert fly.calls == 3  # the refresh in flight was dropped, a new one sent
    fly.answer([_machine("m1"), _machine("m9")])
    assert _ids(await task) == ["m1", "m9"] and observer.oldest_listing == 1002.0


async def test_the_reconciler_forgets_listings_when_its_fence_token_changes(
    world: tuple[Observer, _Fly, list[float]], redis_url: str,
) -> None:
    observer, fly, _clock = world
    fences: list[Fence | None] = [Fence("k", "me:1", 1)]
    redis = aioredis.Redis.from_url(redis_url)
    rec = Reconciler(observer.settings, observer.fly, redis, UnlimitedGovernor(), Metrics(),
                     fence=lambda: fences[0], is_leader=lambda: False, list_interval=0.0)
    forgotten: list[int] = []
    real = rec.observer.forget_listings

    def spy() -> None:
        forgotten.append(1)
        real()

    rec.observer.forget_listings = spy  # type: ignore[method-assign]
    try:
        for token, expected in ((1, 1), (1, 1), (None, 2), (2, 3), (2, 3)):
            fences[0] = None if token is None else Fence("k", f"me:{token}", token)
            fly.answer([_machine("m1")])
            await rec.tick()
            assert len(forgotten) == expected, token
    finally:
        await rec.aclose()
        await redis.aclose()
