"""P2c warm per-job slots: a burst of per-job jobs of 1 s each, Fly's rate limits ON in the local
API (sim runtime), one app, the scaler running normally with its shared (Redis) governor: time
until every job has started on a pool with warm slots, against create-only in the same run.

Set-up: the slots are created beforehand through the scaler's own slot request with the local
API's limiter bypassed (they are "created ahead": a pool refills them at the create rate between
bursts); every measured call meets Fly's limits. A helper plays the runner (it takes the job bound
to a started slot, as ``workers.runner`` does by ``FLY_MACHINE_ID``, and acks it); a sim machine
runs 1 s, then stops, and its slot is free again. "Started" is when that helper saw the job's
machine started. The create-only baseline runs a smaller burst (at 1 create/s a burst of 500 would
take 8 minutes): its sustained rate, and the time the whole burst would take at that rate.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bench.common import (
    BenchConfig,
    ServiceThread,
    UnlimitedGovernor,
    redis_keys,
    row,
    scenario_settings,
)
from bench.simjobs import Enqueuer, SimJobs
from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.local.server import LocalAPIServer
from scaler.local.testing import eventually
from scaler.loop.machines import slot_request

__all__ = ["run"]

GOAL_PER_S = 50.0
GOAL_ALL_S = 15.0
JOB_S = 1.0


async def _make_slots(api: LocalAPIServer, settings: Settings, app: str, n: int) -> None:
    pool = settings.pools[0]
    async with AsyncFlyClient(settings.fly.token, base_url=api.url,
                              governor=UnlimitedGovernor()) as fly:
        sem = asyncio.Semaphore(16)

        async def one() -> None:
            async with sem:
                m = await fly.create_machine(app, slot_request(pool, settings))
                assert m.id is not None
                await fly.wait_machine(app, m.id, "stopped", timeout=60, version=m.instance_id)

        await asyncio.gather(*(one() for _ in range(n)))


def _settings(cfg: BenchConfig, api: LocalAPIServer, ns: str, app: str, queue: str,
              slots: int, cap: int) -> Settings:
    extra: dict[str, Any] = {"warm_slots": slots} if slots else {}
    return scenario_settings(
        api_url=api.url, token=api.token, redis_url=cfg.redis_url, prefix=ns,
        scaler={"shared_rate_limits": True},
        pools=[{
            "name": "ci", "mode": "per-job", "app": app, "queues": [queue],
            "max_machines": cap, "image": "local/bench:latest",
            "cmd": ["python", "-m", "workers.runner"], "boot_timeout": "60s",
            "max_runtime": "120s", **extra,
        }],
    )


def _burst(cfg: BenchConfig, api: LocalAPIServer, ns: str, app: str, queue: str,
           settings: Settings, jobs: int, timeout: float) -> dict[str, Any]:
    enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
    sent: dict[str, float] = {}
    with ServiceThread(settings), SimJobs(api, app, cfg.redis_url, ns, f"{ns}:fs") as sim:
        t0 = time.time()
        for _ in range(jobs):
            rmid, at = enq.send(queue)
            sent[rmid] = at
        eventually(lambda: len(sim.started) >= jobs, timeout, "every job started", interval=0.1)
        started = dict(sim.started)
    enq.close()
    times = sorted(started[j] - t0 for j in sent if j in started)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    return {"jobs": jobs, "all_started_s": times[-1] if times else None,
            "first_started_s": times[0] if times else None, "starts_per_s": rate,
            "start_offsets_s": [round(t, 3) for t in times]}


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P2c; returns ``{"rows": [...], "details": {...}}``."""
    jobs = cfg.n(100, 500, minimum=10)
    slots = cfg.n(20, 100, minimum=4)
    baseline_jobs = cfg.n(8, 20, minimum=4)
    with (
        redis_keys(cfg, "p2c") as ns,
        LocalAPIServer(runtime="sim", rate_limits="fly", sim_run_seconds=JOB_S) as api,
        api.client() as http,
    ):
        app, base_app = (f"bench-{uuid.uuid4().hex[:8]}" for _ in range(2))
        for name in (app, base_app):
            http.post("/v1/apps", json={"name": name, "org_slug": "personal"}).raise_for_status()
        settings = _settings(cfg, api, ns, app, "p2c", slots, slots)
        limiter = api.app.limiter
        assert limiter is not None
        limiter.check = lambda action, scope: 0.0  # type: ignore[method-assign]
        try:
            asyncio.run(_make_slots(api, settings, app, slots))
        finally:
            del limiter.check  # the measured calls meet Fly's limits again
        before = dict(api.state.requests)
        warm = _burst(cfg, api, ns, app, "p2c", settings, jobs, timeout=jobs * 2.0 + 60)
        after = dict(api.state.requests)
        created = sum(1 for m in api.state.machines(app) if "fly_scaler_slot" not in
                      (m.config.get("metadata") or {}))
        base = _burst(cfg, api, ns, base_app, "p2c-create",
                      _settings(cfg, api, ns, base_app, "p2c-create", 0, 1000), baseline_jobs,
                      timeout=baseline_jobs * 3.0 + 60)
        final = dict(api.state.requests)
    delta = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    n429 = sum(n for (_op, status), n in delta.items() if status == 429)
    base429 = sum(n - after.get(k, 0) for k, n in final.items() if k[1] == 429)
    base_rate = base["starts_per_s"]
    base_all = jobs / base_rate if base_rate else None
    rate, all_s = warm["starts_per_s"], warm["all_started_s"]
    note = f"{jobs} jobs of {JOB_S:g} s, {slots} warm slots, Fly's limits on"
    rows = [
        row("P2c", "job starts/s on warm slots (burst, first to last)", f">= {GOAL_PER_S:.0f}/s",
            rate, "/s", baseline=base_rate,
            passed=None if rate is None else rate >= GOAL_PER_S,
            note=f"{note}; baseline: create-only, {baseline_jobs} jobs"),
        row("P2c", "time until every job started (warm slots)", f"<= {GOAL_ALL_S:.0f} s",
            all_s, "s", baseline=base_all,
            passed=None if all_s is None else all_s <= GOAL_ALL_S,
            note=f"baseline: the same burst at the create-only rate ({base_rate or 0:.2f}/s)"),
        row("P2c", "HTTP 429 answers (warm-slot burst)", "0", float(n429), "", passed=n429 == 0),
    ]
    details = {"warm": warm, "create_only": base, "machines_created_in_burst": created,
               "http_429_create_only": base429,
               "requests": {f"{op} {status}": n for (op, status), n in sorted(delta.items())}}
    return {"rows": rows, "details": details}
