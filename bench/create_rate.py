"""P2 create path: per-job launches per second on one app, Fly's rate limits ON in the local API
and the scaler's shared (Redis) governor in front of every call.

All jobs are enqueued up front; the scaler runs normally (event wake-ups, 1 s resync) and a helper
acks each job once its sim machine has started. The sustained rate is measured from the local
API's own request log: successful ``Machines_create`` answers after the initial burst of 3,
``(n - 1 - 3) / (t_last - t_burst)``, compared with Fly's limit of 1/s. 429s are counted by the
local API for every operation.
"""

from __future__ import annotations

import uuid
from typing import Any

from bench.common import BenchConfig, ServiceThread, redis_keys, row, scenario_settings
from bench.simjobs import Enqueuer, SimJobs
from scaler.fly.limits import limit_for
from scaler.local.server import LocalAPIServer
from scaler.local.testing import eventually

__all__ = ["run"]

GOAL_RATIO = 0.95


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P2; returns ``{"rows": [...], "details": {...}}``."""
    limit = limit_for("Machines_create")
    burst = int(limit.burst)
    seconds = cfg.n(15, 60, minimum=3)
    jobs = burst + int(seconds * limit.rate) + 1
    with (
        redis_keys(cfg, "p2") as ns,
        LocalAPIServer(runtime="sim", rate_limits="fly", sim_run_seconds=0.2) as api,
        api.client() as http,
    ):
        app = f"bench-{uuid.uuid4().hex[:8]}"
        http.post("/v1/apps", json={"name": app, "org_slug": "personal"}).raise_for_status()
        settings = scenario_settings(
            api_url=api.url, token=api.token, redis_url=cfg.redis_url, prefix=ns,
            scaler={"shared_rate_limits": True},
            pools=[{
                "name": "jobs", "mode": "per-job", "app": app, "queues": ["p2"],
                "max_machines": 1000, "image": "local/bench:latest",
                "cmd": ["python", "-m", "workers.runner"], "boot_timeout": "60s",
                "max_runtime": "120s",
            }],
        )
        enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
        for _ in range(jobs):
            enq.send("p2")
        enq.close()

        def creates() -> list[float]:
            return sorted(t for t, op, status in list(api.state.recent)
                          if op == "Machines_create" and status == 200)

        with ServiceThread(settings), SimJobs(api, app, cfg.redis_url, ns, f"{ns}:fs"):
            eventually(lambda: len(creates()) >= jobs, seconds * 3 + 30, "every job's create",
                       interval=0.1)
        times = creates()
        counters = dict(api.state.requests)
    too_many = {op: n for (op, status), n in counters.items() if status == 429}
    steady = times[burst:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else None
    overall = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    n429 = sum(too_many.values())
    rows = [
        row("P2", "per-job creates/s, sustained (after burst)",
            f">= {GOAL_RATIO} x {limit.rate:g}/s", rate, "/s", baseline=limit.rate,
            passed=None if rate is None else rate >= GOAL_RATIO * limit.rate,
            note=f"{len(times)} creates, rate limits on, shared governor"),
        row("P2", "HTTP 429 answers (all operations)", "0", float(n429), "", passed=n429 == 0),
    ]
    details = {
        "jobs": jobs, "creates": len(times), "sustained_per_s": rate, "overall_per_s": overall,
        "window_s": steady[-1] - steady[0] if len(steady) > 1 else None,
        "limit": {"rate": limit.rate, "burst": limit.burst}, "http_429_by_operation": too_many,
        "requests": {f"{op} {status}": n for (op, status), n in sorted(counters.items())},
    }
    return {"rows": rows, "details": details}
