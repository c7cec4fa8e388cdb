"""P2b warm path: launches per second when a worker pool starts warm stopped machines, against
creating new ones, in the same run.

This drives the **act step directly**: a :class:`scaler.loop.act.Executor` executes one plan of
``Start`` actions (one per warm machine) and, as the baseline, one plan with a ``Create`` of N
machines, through the scaler's Fly client, its shared Redis governor and its
``max_concurrent_calls`` bound, against the local API with Fly's rate limits ON (sim runtime). Start
is limited per machine (1/s, burst 3), so starting many different machines is not throttled; create
is limited per app (1/s, burst 3). The warm machines are made beforehand with the local API's
limiter bypassed (set-up only; the measured calls all go through it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from bench.common import BenchConfig, UnlimitedGovernor, redis_keys, row, scenario_settings
from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.jobs.claims import ClaimStore
from scaler.jobs.leader import UNFENCED
from scaler.local.server import LocalAPIServer
from scaler.loop.act import Executor
from scaler.loop.governor import RedisGovernor
from scaler.loop.machines import worker_request
from scaler.loop.overlay import InFlight, Overlay
from scaler.policy.types import Create, MachineView, Plan, Start
from scaler.telemetry.metrics import Metrics

__all__ = ["run"]

GOAL_PER_S = 50.0
POOL = "warm"


async def _make_warm(api: LocalAPIServer, settings: Settings, app: str, n: int) -> list[str]:
    pool = settings.pools[0]
    async with AsyncFlyClient(settings.fly.token, base_url=api.url,
                              governor=UnlimitedGovernor()) as fly:
        sem = asyncio.Semaphore(16)

        async def one() -> str:
            async with sem:
                m = await fly.create_machine(app, worker_request(pool, settings))
                if m.id is None:
                    raise RuntimeError("the local API created a machine without an id")
                await fly.stop_machine(app, m.id)
                await fly.wait_machine(app, m.id, "stopped", timeout=30, version=m.instance_id)
                return m.id

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def _act(
    api: LocalAPIServer, settings: Settings, app: str, warm: list[str], creates: int
) -> dict[str, Any]:
    redis = aioredis.Redis.from_url(settings.redis.url.get_secret_value())
    governor = RedisGovernor(redis, settings.redis.prefix)
    fly = AsyncFlyClient(settings.fly.token, base_url=api.url, governor=governor)
    try:
        executor = Executor(settings, fly, redis, ClaimStore(redis, settings.redis.namespace,
                                                       settings.redis.prefix),
                      Metrics(), Overlay(), InFlight())
        starts = Plan(actions=tuple(
            Start(POOL, MachineView(id=mid, name=mid, app=app, pool=POOL, state="stopped"))
            for mid in warm
        ))
        t0 = time.monotonic()
        warm_report = await executor.execute(starts, UNFENCED, time.monotonic() + 300)
        warm_s = time.monotonic() - t0
        t0 = time.monotonic()
        create_report = await executor.execute(
            Plan(actions=(Create(POOL, app, creates),)), UNFENCED, time.monotonic() + 300
        )
        create_s = time.monotonic() - t0
    finally:
        await fly.aclose()
        await redis.aclose()
    return {
        "warm": {"machines": len(warm), "done": len(warm) - len(warm_report.errors),
                 "errors": warm_report.errors,
                 "seconds": warm_s},
        "create": {"machines": creates, "launched": len(create_report.launched),
                   "errors": create_report.errors, "seconds": create_s},
    }


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P2b; returns ``{"rows": [...], "details": {...}}``."""
    n_warm = cfg.n(200, 200, minimum=4)
    n_create = cfg.n(8, 20, minimum=2)
    with (
        redis_keys(cfg, "p2b") as ns,
        LocalAPIServer(runtime="sim", rate_limits="fly") as api,
        api.client() as http,
    ):
        app = f"bench-{uuid.uuid4().hex[:8]}"
        http.post("/v1/apps", json={"name": app, "org_slug": "personal"}).raise_for_status()
        settings = scenario_settings(
            api_url=api.url, token=api.token, redis_url=cfg.redis_url, prefix=ns,
            scaler={"shared_rate_limits": True},
            pools=[{
                "name": POOL, "mode": "worker", "app": app, "queues": ["p2b"],
                "max_machines": 1000, "image": "local/bench:latest",
                "cmd": ["python", "-m", "workers.runner", "--drain"], "warm_machines": n_warm,
            }],
        )
        limiter = api.app.limiter
        assert limiter is not None
        limiter.check = lambda action, scope: 0.0  # type: ignore[method-assign]
        try:
            warm = asyncio.run(_make_warm(api, settings, app, n_warm))
        finally:
            del limiter.check  # the measured calls meet Fly's limits again
        before = dict(api.state.requests)
        result = asyncio.run(_act(api, settings, app, warm, n_create))
        after = dict(api.state.requests)
        started = sum(1 for m in api.state.machines(app) if m.state == "started")
    delta = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    n429 = sum(n for (_op, status), n in delta.items() if status == 429)
    w, c = result["warm"], result["create"]
    warm_rate = w["done"] / w["seconds"] if w["seconds"] > 0 else None
    create_rate = c["launched"] / c["seconds"] if c["seconds"] > 0 else None
    rows = [
        row("P2b", "warm starts/s (act step, Start x N)", f">= {GOAL_PER_S:.0f}/s", warm_rate,
            "/s", baseline=create_rate,
            passed=None if warm_rate is None else warm_rate >= GOAL_PER_S,
            note=f"{n_warm} warm machines; baseline: {n_create} creates, same run"),
        row("P2b", "HTTP 429 answers (warm + create)", "0", float(n429), "", passed=n429 == 0),
    ]
    details = {
        **result, "warm_per_s": warm_rate, "create_per_s": create_rate,
        "machines_started_at_end": started,
        "requests": {f"{op} {status}": n for (op, status), n in sorted(delta.items())},
        "max_concurrent_calls": settings.scaler.max_concurrent_calls,
    }
    return {"rows": rows, "details": details}
