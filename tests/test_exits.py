"""Awaiting the exit of machines whose job finished (scaler.loop.exits), against the local Machines
API over HTTP and real Redis: Fly's answer frees the cap slot before a listing shows the machine
gone, and nothing else does (a wait that times out, a listing that lags, a slot started again)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from scaler.fly.client import AsyncFlyClient
from scaler.jobs.keys import finished_machines_key
from scaler.local.server import LocalAPIServer
from scaler.loop.exits import Exit, ExitWatch
from scaler.loop.governor import MemoryGovernor
from scaler.loop.machines import META_POOL, META_SCALER
from scaler.loop.overlay import Overlay
from scaler.loop.reconciler import Reconciler
from scaler.policy import AwaitExit, Launch, plan
from scaler.policy.types import MachineView
from scaler.telemetry.metrics import Metrics
from tests.scaler_harness import (
    create_app,
    enqueue,
    eventually,
    fly_client,
    make_settings,
    redis_client,
)


def _world(local_api: LocalAPIServer, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    api = fly_client(local_api.url, local_api.token)
    app = create_app(api)
    queue = f"x{int(time.time() * 1e6)}"
    settings = make_settings(
        api_url=local_api.url, token=local_api.token, redis_url=redis_url,
        namespace=redis_prefix, prefix=f"{redis_prefix}fs", app=app, queue=queue,
        max_machines=1, scaler={"orphan_grace": "60s"},
    )
    return {"api": api, "app": app, "queue": queue, "settings": settings,
            "enqueue": lambda: enqueue(redis_url, redis_prefix, f"{redis_prefix}fs", queue,
                                       "record", "k", "v")}


def _finished_machine(w: dict[str, Any], redis_url: str, run_s: float) -> str:
    """A per-job machine of ours (auto_destroy) that exits after ``run_s``, its job marked
    finished as the runner's finish script marks it; returned once it is started."""
    api: httpx.Client = w["api"]
    body = {"config": {
        "image": "x", "auto_destroy": True, "restart": {"policy": "no"},
        "init": {"exec": ["python", "-c", f"import time; time.sleep({run_s})"]},
        "metadata": {META_SCALER: "fly-scaler", META_POOL: "jobs"},
    }}
    mid: str = api.post(f"/v1/apps/{w['app']}/machines", json=body).json()["id"]
    eventually(lambda: api.get(f"/v1/apps/{w['app']}/machines/{mid}").json()["state"]
               == "started", what="the machine started")
    redis_client(redis_url).hset(finished_machines_key(w["settings"].redis.prefix), mid, 1)
    return mid


async def _reconciler(settings: Any, redis_url: str, app: str) -> Reconciler:
    fly = AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url)
    governor = MemoryGovernor()
    # Listings are reused for a minute and the list budget is spent, as in a busy scaler: only
    # the awaited exit can free the slot meanwhile.
    while await governor.try_acquire("Machines_list", f"app:{app}"):
        pass
    rec = Reconciler(settings, fly, aioredis.Redis.from_url(redis_url), governor,
                     Metrics(), list_interval=60.0)
    rec.observer.max_list_age = 60.0
    return rec


def _state(rec: Reconciler, obs: Any, app: str, mid: str) -> str:
    [m] = [v for v in obs.machines_by_app[app] or () if v.id == mid]
    state: str = m.state
    return state


async def _watches_done(rec: Reconciler) -> None:
    await asyncio.gather(*rec.executor.exits._running.values(), return_exceptions=True)


async def test_a_finished_machines_exit_frees_its_cap_slot_before_a_listing_shows_it(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    w = _world(local_api, redis_url, redis_prefix)
    mid = _finished_machine(w, redis_url, run_s=0.5)
    rec = await _reconciler(w["settings"], redis_url, w["app"])
    result = await rec.tick()  # lists it started; the plan awaits its exit
    assert [(type(a), a.machine.id) for a in result.plan.actions
            if isinstance(a, AwaitExit)] == [(AwaitExit, mid)]
    assert len(rec.executor.exits) == 1
    w["enqueue"]()
    obs = await rec.observer.observe()
    # Cap 1 and the machine still running: no launch (and the listing is the same one).
    assert plan(obs, rec.policies, rec.caps).of_type(Launch) == ()
    await _watches_done(rec)
    assert rec.executor.exits._running == {}
    assert rec._wake.is_set()  # the loop is woken, not left to its resync
    exit_ = rec.overlay.exited[mid]
    assert exit_.state == "destroyed"
    assert rec.metrics.registry.get_sample_value(
        "fly_scaler_exit_waits_total", {"result": "exited"}) == 1.0
    api: httpx.Client = w["api"]
    gone = api.get(f"/v1/apps/{w['app']}/machines/{mid}").json()
    assert gone["state"] == "destroyed"
    obs = await rec.observer.observe()
    # The listing is still the one taken before the exit, yet the machine counts no more.
    assert mid in rec.observer._listings[w["app"]].listed.ids
    assert _state(rec, obs, w["app"], mid) == "destroyed"
    assert plan(obs, rec.policies, rec.caps).of_type(Launch) == (
        Launch("jobs", w["app"], w["queue"], 1),)


async def test_an_exit_that_never_comes_keeps_the_machine_counted(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    w = _world(local_api, redis_url, redis_prefix)
    mid = _finished_machine(w, redis_url, run_s=60)  # its process hangs after the job
    rec = await _reconciler(w["settings"], redis_url, w["app"])
    rec.executor.exits.wait_s = 1
    await rec.tick()
    await _watches_done(rec)
    assert mid not in rec.overlay.exited  # Fly never said it stopped: nothing is concluded
    assert rec.metrics.registry.get_sample_value(
        "fly_scaler_exit_waits_total", {"result": "unanswered"}) == 1.0
    w["enqueue"]()
    obs = await rec.observer.observe()
    assert _state(rec, obs, w["app"], mid) == "started"
    assert plan(obs, rec.policies, rec.caps).of_type(Launch) == ()  # still holds the cap slot
    await rec.tick()
    assert len(rec.executor.exits) == 0  # not watched again at once: listings cover it now


def _view(state: str = "started", *, slot: str | None = None) -> MachineView:
    return MachineView(id="m1", name="n", app="a", pool="jobs", state=state, slot=slot,
                       instance_id="v1")


def test_an_exit_is_laid_only_over_older_listings_and_never_over_a_later_start() -> None:
    overlay = Overlay()
    overlay.exited["m1"] = Exit("stopped", sent_at=10.0, answered_at=11.0)
    assert overlay.exit_state("m1", taken_at=10.5) == "stopped"
    assert overlay.exit_state("m1", taken_at=11.5) is None  # that listing shows the truth
    overlay.started["m1"] = 9.0  # started before the wait was sent: that run stopped
    assert overlay.exit_state("m1", taken_at=10.5) == "stopped"
    overlay.started["m1"] = 10.5  # a warm slot started again after the wait was sent
    assert overlay.exit_state("m1", taken_at=10.5) is None
    overlay.prune(11.5)
    assert overlay.exited == {}


async def test_only_machines_listed_running_are_watched_and_not_when_a_listing_comes_anyway(
) -> None:
    calls: list[str] = []

    async def waited(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json={"ok": True, "state": "stopped"})

    fly = AsyncFlyClient("t", base_url="http://fly.invalid",
                         transport=httpx.MockTransport(waited))
    governor = MemoryGovernor()
    results: list[str] = []
    watch = ExitWatch(fly, Overlay(), governor=governor, on_result=results.append)
    # A slot just started (the listing predates the start) may still be stopped in Fly.
    assert not await watch.watch(_view("starting", slot="t1"), lambda: None)
    # The app's list budget is whole: the next tick relists anyway, no wait is sent.
    assert not await watch.watch(_view(slot="t1"), lambda: None)
    while await governor.try_acquire("Machines_list", "app:a"):
        pass
    watch._list_budget.clear()
    assert await watch.watch(_view(slot="t1"), lambda: None)
    assert not await watch.watch(_view(slot="t1"), lambda: None)  # one at a time
    await asyncio.gather(*watch._running.values())
    assert watch.overlay.exited["m1"].state == "stopped"  # a slot stops; it is not destroyed
    assert results == ["exited"]
    assert len(calls) == 1 and "state=stopped" in calls[0] and "instance_id=v1" in calls[0]
    await fly.aclose()


async def test_a_machine_fly_no_longer_knows_is_gone_and_an_error_concludes_nothing() -> None:
    answers = {"m1": httpx.Response(404, json={"error": "machine not found"}),
               "m2": httpx.Response(400, json={"error": "invalid_argument"})}

    async def waited(request: httpx.Request) -> httpx.Response:
        return answers[request.url.path.split("/")[-2]]

    fly = AsyncFlyClient("t", base_url="http://fly.invalid",
                         transport=httpx.MockTransport(waited))
    woken: list[int] = []
    results: list[str] = []
    watch = ExitWatch(fly, Overlay(), wake=lambda: woken.append(1), on_result=results.append)
    gone, refused = _view(), MachineView(id="m2", name="n", app="a", pool="jobs",
                                         state="started", instance_id="v1")
    assert await watch.watch(gone, lambda: None) and await watch.watch(refused, lambda: None)
    await asyncio.gather(*watch._running.values())
    assert watch.overlay.exited["m1"].state == "destroyed"
    assert "m2" not in watch.overlay.exited and len(woken) == 1
    assert sorted(results) == ["gone", "unanswered"]
    assert not await watch.watch(refused, lambda: None)  # not asked again at once
    await fly.aclose()
