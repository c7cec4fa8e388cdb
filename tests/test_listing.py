"""The tick's slim listing: views read from Fly's JSON equal the full model's, and the cache
reuses a view only while its machine is unchanged (local Machines API over real HTTP); the slim
model reads Fly's answers with fields it does not know and without the optional ones."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.fly.errors import FlyError
from scaler.fly.models import Machine
from scaler.fly.models.slim import ListedMachine, decode_listed
from scaler.fly.retry import RetryPolicy
from scaler.jobs.claims import ClaimStore
from scaler.local.server import LocalAPIServer
from scaler.loop.governor import MemoryGovernor
from scaler.loop.listing import ViewCache, listed_view
from scaler.loop.machines import (
    META_SCALER,
    machine_view,
    per_job_request,
    slot_request,
    worker_request,
)
from scaler.loop.observe import Observer
from scaler.loop.overlay import InFlight, Overlay
from scaler.policy.types import ClaimView
from tests.scaler_harness import make_settings

pytest.importorskip("scaler.local.pytest_plugin")


def _json(machine: dict[str, Any]) -> bytes:
    return json.dumps(machine).encode()


def _settings(api: LocalAPIServer, app: str) -> Settings:
    return make_settings(
        api_url=api.url, token=api.token, redis_url="redis://127.0.0.1:6379/0", namespace="n",
        prefix="p", app=app, queue="q",
        pools=[{"name": "jobs", "mode": "per-job", "app": app, "queues": ["q"],
                "image": "local/test:latest", "max_machines": 5},
               {"name": "workers", "mode": "worker", "app": app, "queues": ["w"],
                "image": "local/test:latest", "max_machines": 5, "warm_machines": 1}],
    )


async def test_views_from_json_equal_the_models_and_the_cache_follows_changes(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim")
    app = f"app-{uuid.uuid4().hex[:8]}"
    async with AsyncFlyClient(api.token, base_url=api.url) as fly:
        await fly.create_app(app, "personal")
        settings = _settings(api, app)
        pools = {p.name: p for p in settings.pools}
        claim = ClaimView(queue="q", job="r1", message_id="m1", pool="jobs", launch=2,
                          claimed_at=0.0, machine_name="jobs-r1-2")
        job = await fly.create_machine(app, per_job_request(pools["jobs"], settings, claim))
        worker = await fly.create_machine(app, worker_request(pools["workers"], settings))
        slot = await fly.create_machine(app, slot_request(pools["jobs"], settings))
        assert job.id and worker.id and slot.id
        await fly.wait_machine(app, worker.id, "started", timeout=10)
        flt = {META_SCALER: settings.scaler.id}

        async def both() -> tuple[list[Any], list[msgspec.Raw]]:
            return (await fly.list_machines(app, metadata=flt),
                    (await fly.list_machines_slim(app, metadata=flt)).items)

        def ids(items: list[msgspec.Raw]) -> list[str]:
            return [m.id for m in map(decode_listed, items) if m.id]

        models, items = await both()
        raws = [decode_listed(r) for r in items]
        assert sorted(ids(items)) == sorted([job.id, worker.id, slot.id])
        for model, raw in zip(models, raws, strict=True):
            expected = machine_view(model, app, settings.scaler.id, pools)
            assert expected is not None
            assert listed_view(raw, app, settings.scaler.id, pools) == expected
        by_id = {r.id: listed_view(r, app, settings.scaler.id, pools) for r in raws}
        job_view = by_id[job.id]
        assert job_view is not None and (job_view.job, job_view.launch) == ("r1", 2)
        slot_view = by_id[slot.id]
        assert slot_view is not None and slot_view.slot and slot_view.job is None
        # the same machine listed by another scaler, or on an app its pool is not on
        assert listed_view(raws[0], app, "someone-else", pools) is None
        stray = listed_view(raws[0], "other-app", settings.scaler.id, pools)
        assert stray is not None and stray.pool is None

        cache = ViewCache(app, settings.scaler.id, pools)
        first = cache.update(items)
        assert cache.reused == 0 and first == [v for r in raws if (v := by_id[r.id])]
        before = (await both())[1]
        again = cache.update(before)
        assert cache.reused == 3 and again == first

        await fly.stop_machine(app, worker.id)
        current = await fly.get_machine(app, worker.id)
        await fly.wait_machine(app, worker.id, "stopped", version=current.instance_id,
                               timeout=10)
        models, items = await both()
        views = {v.id: v for v in cache.update(items)}
        def facts(r: ListedMachine) -> tuple[Any, ...]:
            return r.state, r.instance_id, r.updated_at

        old = {r.id: facts(r) for r in map(decode_listed, before)}
        unchanged = [r.id for r in map(decode_listed, items) if old[r.id] == facts(r)]
        assert worker.id not in unchanged and job.id in unchanged
        assert cache.reused == len(unchanged)  # the stopped worker (and a slot that moved) rebuilt
        assert views[worker.id].state == "stopped"
        assert views[worker.id] == machine_view(
            next(m for m in models if m.id == worker.id), app, settings.scaler.id, pools)

        await fly.destroy_machine(app, job.id, force=True)
        listing = await fly.list_machines_slim(app, metadata=flt)
        assert sorted(v.id for v in cache.update(listing.items)) == sorted([worker.id, slot.id])
        assert len(listing) == 2 and [m.id for m in listing.machines()] == ids(listing.items)


def test_metadata_changes_invalidate_a_cached_view_and_foreign_machines_are_skipped() -> None:
    settings = make_settings(api_url="http://x", token="t", redis_url="redis://127.0.0.1:6379/0",
                             namespace="n", prefix="p", app="app", queue="q")
    pools = {p.name: p for p in settings.pools}
    pool = settings.pools[0].name
    raw: dict[str, Any] = {
        "id": "m1", "name": "n1", "state": "started", "region": "iad", "instance_id": "i1",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:05Z",
        "events": [{"status": "started", "timestamp": 1767225604000}],
        "config": {"guest": {"memory_mb": 512},
                   "metadata": {META_SCALER: settings.scaler.id, "fly_scaler_pool": pool}},
    }
    foreign = {**raw, "id": "m2", "config": {"metadata": {META_SCALER: "other"}}}
    cache = ViewCache("app", settings.scaler.id, pools)
    [view] = cache.update([_json(raw), _json(foreign), _json({"no": "id"})])
    assert view == machine_view(Machine.model_validate(raw), "app", settings.scaler.id, pools)
    assert (view.pool, view.started_at, view.memory_mb) == (pool, 1767225604.0, 512)
    moved = {**raw, "config": {**raw["config"], "metadata": {META_SCALER: settings.scaler.id}}}
    [again] = cache.update([_json(moved), _json(foreign)])
    assert cache.reused == 1  # the foreign machine's "not ours" is reused too
    assert again.pool is None
    # a new clock estimate moves every view onto our clock; the same one reuses them
    [shifted] = cache.update([_json(moved)], offset=2.0)
    assert cache.reused == 0
    assert (shifted.created_at, shifted.started_at) == (again.created_at - 2.0, 1767225602.0)
    assert cache.update([_json(moved)], offset=2.0) == [shifted] and cache.reused == 1


def test_a_machine_in_a_pools_second_app_belongs_to_the_pool_on_both_paths() -> None:
    settings = make_settings(
        api_url="http://x", token="t", redis_url="redis://127.0.0.1:6379/0", namespace="n",
        prefix="p", app="a1", queue="q",
        pools=[{"name": "jobs", "mode": "per-job", "apps": ["a1", "a2"], "queues": ["q"],
                "image": "local/test:latest", "max_machines": 4}],
    )
    pools = {p.name: p for p in settings.pools}
    raw: dict[str, Any] = {
        "id": "m1", "name": "n1", "state": "started", "region": "iad",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:05Z",
        "config": {"metadata": {META_SCALER: settings.scaler.id, "fly_scaler_pool": "jobs"}},
    }
    for app, pool in (("a1", "jobs"), ("a2", "jobs"), ("elsewhere", None)):
        fast = listed_view(decode_listed(_json(raw)), app, settings.scaler.id, pools)
        model = machine_view(Machine.model_validate(raw), app, settings.scaler.id, pools)
        assert fast == model
        assert fast is not None and fast.pool == pool, app


# --- Fly's answers as the real API sends them (httpx.MockTransport) ---------------------------

# A machine as Fly lists it, with fields this client does not know (top level, in config, in
# guest, in events) and some it knows as null: the slim model must read past all of them.
_FLY_MACHINE: dict[str, Any] = {
    "id": "148e21ea7e9e89", "name": "jobs-r9-1", "state": "started", "region": "ord",
    "instance_id": "01HZZZ", "private_ip": "fdaa::3", "image_ref": {"registry": "r", "tag": "x"},
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:07Z",
    "host_status": "ok", "incomplete_config": None, "checks": [{"name": "c", "status": "ok"}],
    "a_field_from_next_year": {"nested": [1, 2.5, None, {"x": True}]},
    "events": [
        {"id": "e2", "type": "start", "status": "started", "source": "flyd",
         "timestamp": 1767225606000, "request": {"exit_event": None}},
        {"id": "e1", "type": "launch", "status": "created", "source": "user",
         "timestamp": 1767225600000},
    ],
    "config": {
        "image": "registry.fly.io/app:1", "env": {"A": "1"}, "auto_destroy": True,
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024, "gpu_kind": None,
                  "persist_rootfs": "never"},
        "services": [{"ports": [{"port": 443}], "protocol": "tcp", "internal_port": 8080}],
        "metadata": {META_SCALER: "fly-scaler", "fly_scaler_pool": "jobs",
                     "fly_scaler_job": "r9", "fly_scaler_launch": "1",
                     "fly_scaler_size": "shared-cpu-1x", "fly_platform_version": "v2"},
        "a_config_field_from_next_year": [],
    },
}
# The same machine with every optional part missing or null.
_BARE: list[dict[str, Any]] = [
    {"id": "m-bare", "config": {"metadata": {META_SCALER: "fly-scaler"}}},
    {"id": "m-null", "name": None, "state": None, "events": None, "created_at": None,
     "config": {"metadata": {META_SCALER: "fly-scaler"}, "guest": None}},
    {"id": "m-noconfig", "config": None},
    {"id": "m-nometa", "config": {"metadata": None, "guest": {"memory_mb": None}}},
]


def _fly_serving(body: bytes, seen: list[httpx.Request]) -> AsyncFlyClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return AsyncFlyClient("t", transport=httpx.MockTransport(handler), base_url="http://fly",
                          governor=MemoryGovernor(), retry=RetryPolicy(max_attempts=1))


async def test_the_slim_listing_reads_unknown_fields_and_missing_optional_ones() -> None:
    settings = make_settings(api_url="http://fly", token="t", redis_url="redis://x", namespace="n",
                             prefix="p", app="app", queue="q")
    pools = {p.name: p for p in settings.pools}
    answer = [_FLY_MACHINE, *_BARE]
    seen: list[httpx.Request] = []
    async with _fly_serving(json.dumps(answer).encode(), seen) as fly:
        listing = await fly.list_machines_slim("app", metadata={META_SCALER: "fly-scaler"})
        models = await fly.list_machines("app", metadata={META_SCALER: "fly-scaler"})
    # the same request as the full listing: only how the answer is read differs
    assert seen[0].method == seen[1].method == "GET"
    assert seen[0].url == seen[1].url
    assert str(seen[0].url) == "http://fly/v1/apps/app/machines?metadata.fly_scaler=fly-scaler"
    assert [json.loads(bytes(item)) for item in listing.items] == answer  # each object as sent
    assert len(listing) == 5
    for slim, model in zip(listing.machines(), models, strict=True):
        fast = listed_view(slim, "app", settings.scaler.id, pools)
        assert fast == machine_view(model, "app", settings.scaler.id, pools), model.id
    full = listed_view(listing.machines()[0], "app", settings.scaler.id, pools)
    assert full is not None
    assert (full.pool, full.job, full.launch, full.memory_mb, full.started_at) == (
        "jobs", "r9", 1, 1024, 1767225606.0)
    bare = [listed_view(m, "app", settings.scaler.id, pools) for m in listing.machines()[1:]]
    assert [v.id if v else None for v in bare] == ["m-bare", "m-null", None, None]
    assert bare[1] is not None and (bare[1].state, bare[1].name, bare[1].memory_mb) == (
        "unknown", "", 0)
    views = ViewCache("app", settings.scaler.id, pools).update(listing.items)
    assert [v.id for v in views] == [_FLY_MACHINE["id"], "m-bare", "m-null"]


@pytest.mark.parametrize("body", [b"", b"null", b"[]"])
async def test_an_empty_answer_is_an_empty_slim_listing(body: bytes) -> None:
    async with _fly_serving(body, []) as fly:
        assert len(await fly.list_machines_slim("app")) == 0


async def test_an_answer_of_the_wrong_shape_is_an_error_not_an_empty_listing() -> None:
    async with _fly_serving(b'{"machines": []}', []) as fly:
        with pytest.raises(FlyError, match="expected shape"):
            await fly.list_machines_slim("app")
    wrong = {**_FLY_MACHINE, "config": {**_FLY_MACHINE["config"], "guest": {"memory_mb": "1G"}}}
    cache = ViewCache("app", "fly-scaler", {})
    with pytest.raises(msgspec.ValidationError, match="memory_mb"):
        cache.update([_json(_FLY_MACHINE), _json(wrong)])


async def test_a_listing_with_a_machine_of_the_wrong_shape_is_unknown_never_a_machine_less(
    redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(api_url="http://fly", token="t", redis_url=redis_url,
                             namespace=redis_prefix, prefix=f"{redis_prefix}fs", app="app",
                             queue="q")
    good = json.dumps([_FLY_MACHINE]).encode()
    wrong = {**_FLY_MACHINE, "id": "m2", "events": [{"status": "started", "timestamp": "soon"}]}
    answers = [good, json.dumps([_FLY_MACHINE, wrong]).encode()]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=answers[min(len(seen), 2) - 1])

    redis = aioredis.Redis.from_url(redis_url)
    fly = AsyncFlyClient("t", transport=httpx.MockTransport(handler), base_url="http://fly",
                         governor=MemoryGovernor(), retry=RetryPolicy(max_attempts=1))
    clock = [1000.0]
    observer = Observer(
        settings, fly, redis, ClaimStore(redis, redis_prefix, f"{redis_prefix}fs"),
        MemoryGovernor(), overlay=Overlay(), inflight=InFlight(), clock=lambda: clock[0],
        list_interval=0.0,
    )
    try:
        first = await observer.observe()
        assert [m.id for m in first.machines_by_app["app"] or ()] == [_FLY_MACHINE["id"]]
        clock[0] += 1.0
        second = await observer.observe()
        assert second.machines_by_app["app"] is None
        assert "timestamp" in observer.unknown["fly:app"]
    finally:
        await fly.aclose()
        await redis.aclose()
