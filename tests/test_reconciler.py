"""The reconciler tick against the local Machines API and real Redis: unknown data is not zero,
decisions are logged and explained, metrics follow the world."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from scaler.fly.client import AsyncFlyClient
from scaler.local.server import LocalAPIServer
from scaler.loop.governor import MemoryGovernor
from scaler.loop.machines import META_POOL, META_SCALER
from scaler.loop.reconciler import Reconciler
from scaler.telemetry.costs import cost_per_second
from scaler.telemetry.metrics import Metrics
from tests.scaler_harness import (
    create_app,
    enqueue,
    eventually,
    fly_client,
    machines,
    make_settings,
    redis_client,
)


def _world(local_api: LocalAPIServer, redis_url: str, redis_prefix: str,
           **kw: Any) -> dict[str, Any]:
    api = fly_client(local_api.url, local_api.token)
    app = create_app(api)
    queue = f"r{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        api_url=local_api.url, token=local_api.token, redis_url=redis_url,
        namespace=redis_prefix, prefix=f"{redis_prefix}fs", app=app, queue=queue, **kw,
    )
    return {"api": api, "app": app, "queue": queue, "settings": settings}


def _reconciler(settings: Any, redis_url: str) -> Reconciler:
    fly = AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url)
    return Reconciler(settings, fly, aioredis.Redis.from_url(redis_url), MemoryGovernor(),
                      Metrics(), list_interval=0.0)


def _gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


async def test_an_unreadable_machine_list_reaps_nothing(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    w = _world(local_api, redis_url, redis_prefix)
    api: httpx.Client = w["api"]
    # A stopped machine of ours: normally reaped at once.
    body = {"config": {"image": "x", "init": {"exec": ["python", "-c", "pass"]},
                       "restart": {"policy": "no"},
                       "metadata": {META_SCALER: "fly-scaler", META_POOL: "jobs"}}}
    created = api.post(f"/v1/apps/{w['app']}/machines", json=body).json()
    eventually(lambda: api.get(f"/v1/apps/{w['app']}/machines/{created['id']}").json()["state"]
               == "stopped", what="the machine exited")
    api.post("/_admin/faults", json={"Machines_list": {"error_rate": 1.0, "error_status": 503}})
    rec = _reconciler(w["settings"], redis_url)
    result = await rec.tick()
    assert result.observation.machines_by_app[w["app"]] is None
    assert any(d.reason == "unknown_data" for d in result.plan.decisions)
    assert _gauge(rec.metrics, "fly_scaler_data_unknown", source=f"fly:{w['app']}") == 1.0
    still = api.get(f"/v1/apps/{w['app']}/machines/{created['id']}").json()
    assert still["state"] == "stopped"  # untouched while the listing is unknown
    api.post("/_admin/faults", json={})
    result = await rec.tick()
    reaps = [d for d in result.plan.decisions if d.kind == "reap" and d.outcome == "acted"]
    assert reaps and reaps[0].reason == "stopped"
    assert machines(api, w["app"]) == []
    assert _gauge(rec.metrics, "fly_scaler_data_unknown", source=f"fly:{w['app']}") == 0.0


async def test_unreachable_redis_launches_nothing_and_says_so(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    w = _world(local_api, redis_url, redis_prefix)
    rec = _reconciler(w["settings"], "redis://127.0.0.1:1/0")
    result = await rec.tick()
    assert result.observation.queues[w["queue"]] is None
    assert result.plan.actions == ()
    assert any(d.reason == "unknown_data" for d in result.plan.decisions)
    assert _gauge(rec.metrics, "fly_scaler_data_unknown", source="redis") == 1.0


async def test_a_capped_launch_is_a_logged_decision_with_its_inputs(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    w = _world(local_api, redis_url, redis_prefix, max_machines=1)
    s = w["settings"]
    for i in range(3):
        enqueue(redis_url, s.redis.namespace, s.redis.prefix, w["queue"], "record", "k", str(i))
    rec = _reconciler(s, redis_url)
    with capture_logs() as logs:
        result = await rec.tick()
    launched = [d for d in result.plan.decisions if d.kind == "launch" and d.outcome == "acted"]
    assert launched and launched[0].count == 1
    capped = [d for d in result.plan.decisions if d.reason == "cap_pool"]
    assert capped and capped[0].outcome == "not_taken" and capped[0].count == 2
    events = [e for e in logs if e["event"] == "decision"]
    assert any(e["reason"] == "cap_pool" and e["inputs"]["cap"] == 1 for e in events)
    assert _gauge(rec.metrics, "fly_scaler_decisions_not_taken_total", pool="jobs",
                  reason="cap_pool") == 1.0
    # gauges show what the tick observed (before it claimed one message)
    assert _gauge(rec.metrics, "fly_scaler_queue_messages", queue=w["queue"],
                  state="ready") == 3.0
    assert len(machines(w["api"], w["app"])) == 1
    await rec.executor.drain(wait_s=10)


@pytest.mark.parametrize("trigger", ["event", "resync"])
async def test_tick_counts_its_trigger(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str, trigger: str
) -> None:
    w = _world(local_api, redis_url, redis_prefix)
    rec = _reconciler(w["settings"], redis_url)
    await rec.tick(trigger)
    assert _gauge(rec.metrics, "fly_scaler_ticks_total", trigger=trigger) == 1.0


async def test_scaler_status_prints_the_leaders_last_tick(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str, tmp_path: Any,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from scaler.commands import status

    w = _world(local_api, redis_url, redis_prefix, max_machines=1)
    s = w["settings"]
    for i in range(2):
        enqueue(redis_url, s.redis.namespace, s.redis.prefix, w["queue"], "record", "k", str(i))
    rec = _reconciler(s, redis_url)
    await rec.tick()
    await rec.executor.drain(wait_s=10)
    config = tmp_path / "scaler.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\nnamespace = "{s.redis.namespace}"\n'
        f'prefix = "{s.redis.prefix}"\n'
    )
    monkeypatch.delenv("REDIS_URL", raising=False)
    args = argparse.Namespace(config=str(config), json=False, watch=False, interval=2.0)
    assert status.run(args) == 0
    out = capsys.readouterr().out
    assert f"{w['queue']}: ready=2" in out
    assert "jobs: 2 ready, 0 live of cap 1: launching 1" in out
    assert "[not_taken]" in out and "pool cap" in out


async def test_started_machines_accrue_machine_seconds_and_cost(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    w = _world(local_api, redis_url, redis_prefix)
    api: httpx.Client = w["api"]
    body = {"config": {"image": "x", "init": {"exec": ["python", "-c",
                                                       "import time; time.sleep(60)"]},
                       "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1280},
                       "metadata": {META_SCALER: "fly-scaler", META_POOL: "jobs",
                                    "fly_scaler_size": "shared-cpu-1x"}}}
    created = api.post(f"/v1/apps/{w['app']}/machines", json=body).json()
    eventually(lambda: api.get(f"/v1/apps/{w['app']}/machines/{created['id']}").json()["state"]
               == "started", what="the machine started")
    clock = [1000.0]
    rec = _reconciler(w["settings"], redis_url)
    rec.clock = rec.observer.clock = lambda: clock[0]
    await rec.tick()
    clock[0] += 10.0
    await rec.tick()
    labels = {"pool": "jobs", "size": "shared-cpu-1x"}
    assert _gauge(rec.metrics, "fly_scaler_machine_seconds_total", **labels) == 10.0
    expected = 10.0 * cost_per_second("shared", 1, 1280)
    assert _gauge(rec.metrics, "fly_scaler_estimated_cost_usd_total", **labels) == (
        pytest.approx(expected)
    )


@pytest.mark.prometheus
async def test_a_worker_pool_scales_on_a_promql_query(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str, tmp_path: Any
) -> None:
    from scaler.loop.prometheus import PrometheusReader
    from tests.scaler_harness import prometheus_server

    api = fly_client(local_api.url, local_api.token)
    app = create_app(api)
    pool = {"name": "reports", "mode": "worker", "app": app, "queues": ["reports"],
            "max_machines": 5, "image": "x", "cmd": ["python", "-c", "import time; "
                                                       "time.sleep(60)"],
            "scale_on": "prometheus", "query": "vector(3)", "target_per_machine": 1.5}
    with prometheus_server(None, tmp_path) as prom:
        settings = make_settings(
            api_url=local_api.url, token=local_api.token, redis_url=redis_url,
            namespace=redis_prefix, prefix=f"{redis_prefix}fs", app=app, queue="reports",
            pools=[pool], scaler={"shared_rate_limits": False},
            sections={"prometheus": {"url": prom}},
        )
        fly = AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url)
        reader = PrometheusReader(prom)
        rec = Reconciler(settings, fly, aioredis.Redis.from_url(redis_url), MemoryGovernor(),
                         Metrics(), prometheus=reader, list_interval=0.0)
        result = await rec.tick()
        await rec.executor.drain(wait_s=10)
        await reader.aclose()
    assert result.observation.metric_values == {"reports": 3.0}
    assert result.plan.desired["reports"] == 2  # ceil(3 / 1.5)
    assert len(machines(api, app)) == 2


async def test_orphan_marks_of_machines_that_are_gone_are_forgotten(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    from scaler.jobs.keys import orphans_key

    w = _world(local_api, redis_url, redis_prefix)
    api: httpx.Client = w["api"]
    # a per-job machine of ours with no claim and no finished job: the planner marks it
    body = {"config": {"image": "x", "init": {"exec": ["python", "-c",
                                                       "import time; time.sleep(60)"]},
                       "metadata": {META_SCALER: "fly-scaler", META_POOL: "jobs"}}}
    created = api.post(f"/v1/apps/{w['app']}/machines", json=body).json()
    rec = _reconciler(w["settings"], redis_url)
    await rec.tick()
    key = orphans_key(w["settings"].redis.prefix)
    r = redis_client(redis_url)
    assert r.hkeys(key) == [created["id"]]
    # it goes away by itself (as an auto_destroy machine does); the mark goes with it
    api.delete(f"/v1/apps/{w['app']}/machines/{created['id']}", params={"force": True})
    eventually(lambda: not machines(api, w["app"]), what="the machine gone from the listing")
    await rec.tick()
    assert r.hkeys(key) == []


async def test_a_machine_whose_job_finished_is_left_to_exit_not_marked_an_orphan(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    import time

    from scaler.jobs.keys import finished_machines_key, orphans_key

    w = _world(local_api, redis_url, redis_prefix)
    api: httpx.Client = w["api"]
    body = {"config": {"image": "x", "init": {"exec": ["python", "-c",
                                                       "import time; time.sleep(60)"]},
                       "metadata": {META_SCALER: "fly-scaler", META_POOL: "jobs"}}}
    created = api.post(f"/v1/apps/{w['app']}/machines", json=body).json()
    prefix = w["settings"].redis.prefix
    r = redis_client(redis_url)
    r.hset(finished_machines_key(prefix), created["id"], 1)  # as the runner's finish script does
    clock = [time.time()]
    rec = _reconciler(w["settings"], redis_url)
    rec.clock = rec.observer.clock = lambda: clock[0]
    with capture_logs() as logs:
        result = await rec.tick()
    [seen] = result.observation.machines_by_app[w["app"]] or ()
    assert seen.finished_at == clock[0]  # when the scaler first saw it, whatever the runner's clock
    assert r.hkeys(orphans_key(prefix)) == []
    assert not [e for e in logs if e["event"] in ("orphan marked", "machine destroyed")]
    clock[0] += 2.5  # past the orphan grace (2s): it lingers, so it goes, with its own reason
    result = await rec.tick()
    assert _gauge(rec.metrics, "fly_scaler_reaps_total", pool="jobs",
                  reason="finished_lingering") == 1.0
    eventually(lambda: not machines(api, w["app"]), what="the lingering machine destroyed")
    await rec.tick()
    assert r.hkeys(finished_machines_key(prefix)) == [created["id"]]  # kept a while, then dropped
    clock[0] += 60
    await rec.tick()
    assert r.hkeys(finished_machines_key(prefix)) == []


async def test_each_finished_job_is_one_line_and_counted_as_its_status_says(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    from scaler.jobs.claims import ClaimStore, RunnerClaim
    from scaler.jobs.leader import UNFENCED

    w = _world(local_api, redis_url, redis_prefix)
    s = w["settings"]
    ids = [enqueue(redis_url, s.redis.namespace, s.redis.prefix, w["queue"], "record", "k", str(i))
           for i in range(3)]
    aredis = aioredis.Redis.from_url(redis_url)
    claims = await ClaimStore(aredis, s.redis.namespace, s.redis.prefix).claim(
        w["queue"], "jobs", 3, 1000, UNFENCED)
    await aredis.aclose()
    r = redis_client(redis_url)
    for c, (outcome, error) in zip(claims, [("ack", None), ("ack", "ValueError: once"),
                                            ("nack", "RuntimeError: boom")], strict=True):
        run = RunnerClaim(r, namespace=s.redis.namespace, prefix=s.redis.prefix,
                          queue=w["queue"], redis_message_id=c.redis_message_id, launch=1)
        assert run.mark_running(f"m-{c.message_id[:4]}", 2000)
        assert run.finish(outcome, 2500, machine_id=f"m-{c.message_id[:4]}", error=error,
                          message_id=c.message_id, actor="record")  # type: ignore[arg-type]
    rec = _reconciler(s, redis_url)
    with capture_logs() as logs:
        await rec.recorder.drain_job_events()
    lines = [e for e in logs if e["event"] == "job finished"]
    assert [(e["log_level"], e["outcome"], e["message_id"]) for e in lines] == [
        ("info", "done", ids[0]), ("info", "failed", ids[1]), ("warning", "dead_lettered", ids[2])]
    assert all(e["machine"] == f"m-{e['message_id'][:4]}" and e["run_s"] == 0.5 and
               e["queue"] == w["queue"] and e["pool"] == "jobs" for e in lines)
    assert (lines[1]["error"], lines[2]["reason"]) == ("ValueError: once", "RuntimeError: boom")
    for outcome in ("done", "failed", "dead_lettered"):
        assert _gauge(rec.metrics, "fly_scaler_jobs_finished_total", pool="jobs",
                      outcome=outcome) == 1.0
    assert _gauge(rec.metrics, "fly_scaler_jobs_dead_lettered_total", pool="jobs",
                  reason="job_failed") == 1.0
