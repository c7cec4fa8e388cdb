"""The tick's slim listing: views read from Fly's JSON equal the full model's, and the cache
reuses a view only while its machine is unchanged (local Machines API over real HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.fly.models import Machine
from scaler.local.server import LocalAPIServer
from scaler.loop.listing import ViewCache, listed_view
from scaler.loop.machines import (
    META_SCALER,
    machine_view,
    per_job_request,
    slot_request,
    worker_request,
)
from scaler.policy.types import ClaimView
from tests.scaler_harness import make_settings

pytest.importorskip("scaler.local.pytest_plugin")


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

        async def both() -> tuple[list[Any], list[dict[str, Any]]]:
            return (await fly.list_machines(app, metadata=flt),
                    await fly.list_machines_raw(app, metadata=flt))

        models, raws = await both()
        assert sorted(r["id"] for r in raws) == sorted([job.id, worker.id, slot.id])
        for model, raw in zip(models, raws, strict=True):
            expected = machine_view(model, app, settings.scaler.id, pools)
            assert expected is not None
            assert listed_view(raw, app, settings.scaler.id, pools) == expected
        by_id = {r["id"]: listed_view(r, app, settings.scaler.id, pools) for r in raws}
        job_view = by_id[job.id]
        assert job_view is not None and (job_view.job, job_view.launch) == ("r1", 2)
        slot_view = by_id[slot.id]
        assert slot_view is not None and slot_view.slot and slot_view.job is None
        # the same machine listed by another scaler, or on an app its pool is not on
        assert listed_view(raws[0], app, "someone-else", pools) is None
        stray = listed_view(raws[0], "other-app", settings.scaler.id, pools)
        assert stray is not None and stray.pool is None

        cache = ViewCache(app, settings.scaler.id, pools)
        first = cache.update(raws)
        assert cache.reused == 0 and first == [v for r in raws if (v := by_id[r["id"]])]
        before = (await both())[1]
        again = cache.update(before)
        assert cache.reused == 3 and again == first

        await fly.stop_machine(app, worker.id)
        current = await fly.get_machine(app, worker.id)
        await fly.wait_machine(app, worker.id, "stopped", version=current.instance_id,
                               timeout=10)
        models, raws = await both()
        views = {v.id: v for v in cache.update(raws)}
        def facts(r: dict[str, Any]) -> tuple[Any, ...]:
            return r["state"], r["instance_id"], r["updated_at"]

        old = {r["id"]: facts(r) for r in before}
        unchanged = [r["id"] for r in raws if old[r["id"]] == facts(r)]
        assert worker.id not in unchanged and job.id in unchanged
        assert cache.reused == len(unchanged)  # the stopped worker (and a slot that moved) rebuilt
        assert views[worker.id].state == "stopped"
        assert views[worker.id] == machine_view(
            next(m for m in models if m.id == worker.id), app, settings.scaler.id, pools)

        await fly.destroy_machine(app, job.id, force=True)
        assert sorted(v.id for v in cache.update(await fly.list_machines_raw(app, metadata=flt))) \
            == sorted([worker.id, slot.id])


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
    [view] = cache.update([raw, foreign, {"no": "id"}])
    assert view == machine_view(Machine.model_validate(raw), "app", settings.scaler.id, pools)
    assert (view.pool, view.started_at, view.memory_mb) == (pool, 1767225604.0, 512)
    moved = {**raw, "config": {**raw["config"], "metadata": {META_SCALER: settings.scaler.id}}}
    [again] = cache.update([moved, foreign])
    assert cache.reused == 1  # the foreign machine's "not ours" is reused too
    assert again.pool is None
    # a new clock estimate moves every view onto our clock; the same one reuses them
    [shifted] = cache.update([moved], offset=2.0)
    assert cache.reused == 0
    assert (shifted.created_at, shifted.started_at) == (again.created_at - 2.0, 1767225602.0)
    assert cache.update([moved], offset=2.0) == [shifted] and cache.reused == 1


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
        fast = listed_view(raw, app, settings.scaler.id, pools)
        model = machine_view(Machine.model_validate(raw), app, settings.scaler.id, pools)
        assert fast == model
        assert fast is not None and fast.pool == pool, app
