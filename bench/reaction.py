"""P1 reaction: enqueue -> create request received by the local Machines API.

Jobs are enqueued one at a time at a steady pace into a per-job pool; the local API runs the sim
runtime with its rate limits off, and the scaler's governor is replaced by one that never waits
(the governor is measured by P2, not here). The latency of a job is the local API's ``created_at``
of its first machine (taken when the create handler runs) minus the wall time just before the
enqueue call. Run twice in the same process: with event wake-ups (``scaler.event_wakeups = true``)
and, as the baseline, without them (resync timer only, 1 s).
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from unittest import mock

from bench.common import (
    BenchConfig,
    ServiceThread,
    UnlimitedGovernor,
    percentile,
    redis_keys,
    row,
    scenario_settings,
)
from bench.simjobs import Enqueuer, SimJobs, create_times
from scaler.local.server import LocalAPIServer
from scaler.local.testing import eventually

__all__ = ["run"]

GOAL_P99_MS = 50.0


def _one(cfg: BenchConfig, *, wakeups: bool, jobs: int, interval: float) -> dict[str, Any]:
    with (
        redis_keys(cfg, "p1") as ns,
        LocalAPIServer(runtime="sim", rate_limits="off", sim_run_seconds=0.2) as api,
        api.client() as http,
    ):
        app = f"bench-{uuid.uuid4().hex[:8]}"
        http.post("/v1/apps", json={"name": app, "org_slug": "personal"}).raise_for_status()
        queue = "p1"
        settings = scenario_settings(
            api_url=api.url, token=api.token, redis_url=cfg.redis_url, prefix=ns,
            scaler={"event_wakeups": wakeups, "resync_interval": "1s"},
            pools=[{
                "name": "jobs", "mode": "per-job", "app": app, "queues": [queue],
                "max_machines": 1000, "image": "local/bench:latest",
                "cmd": ["python", "-m", "workers.runner"], "boot_timeout": "30s",
                "max_runtime": "60s",
            }],
        )
        enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
        sent: dict[str, float] = {}
        with (
            mock.patch("scaler.loop.service.make_governor", lambda *a, **k: UnlimitedGovernor()),
            ServiceThread(settings, list_interval=1.0) as svc,
            SimJobs(api, app, cfg.redis_url, ns, f"{ns}:fs"),
        ):
            service = svc.service
            assert service is not None
            eventually(lambda: service.reconciler.last is not None, 20, "the first tick")
            next_at = time.monotonic()
            for _ in range(jobs):
                next_at += interval
                job, at = enq.send(queue)
                sent[job] = at
                time.sleep(max(0.0, next_at - time.monotonic()))
            eventually(lambda: len(create_times(api, app).keys() & sent.keys()) >= len(sent),
                       30, "a create for every job", interval=0.05)
        enq.close()
        created = create_times(api, app)
    latencies = [(created[j] - t) * 1000 for j, t in sent.items() if j in created]
    return {
        "wakeups": wakeups, "jobs": jobs, "interval_s": interval, "measured": len(latencies),
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=None),
    }


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P1; returns ``{"rows": [...], "details": {...}}``."""
    jobs = cfg.n(200, 1000, minimum=5)
    interval = 0.05
    on = _one(cfg, wakeups=True, jobs=jobs, interval=interval)
    off = _one(cfg, wakeups=False, jobs=jobs, interval=interval)
    p99, base99 = on["p99_ms"], off["p99_ms"]
    rows = [
        row("P1", "reaction p50 (enqueue -> create received)", "-", on["p50_ms"], "ms",
            baseline=off["p50_ms"], note="baseline: wake-ups off, 1 s resync"),
        row("P1", "reaction p99 (enqueue -> create received)", f"<= {GOAL_P99_MS:.0f} ms", p99,
            "ms", baseline=base99, passed=None if p99 is None else p99 <= GOAL_P99_MS,
            note=f"{jobs} jobs, one per {interval * 1000:.0f} ms, sim, rate limits off"),
    ]
    return {"rows": rows, "details": {"wakeups_on": on, "wakeups_off": off}}
