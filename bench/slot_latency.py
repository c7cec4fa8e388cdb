"""P1b what a user feels: enqueue -> job entered, p50/p99, with the local API's realistic timings
(a create boots in about 3 s, a start of a stopped machine in about 1 s): a per-job job on a warm
slot against one that creates its machine, in one run.

Both pools run in the same local API (sim runtime, rate limits off and a governor that never
waits: the rate limit is P2's and P2c's subject) with the scaler running normally. Jobs are sent
one at a time, far enough apart that each finds a free slot. "Entered" is when the helper playing
the runner saw the job's machine ``started`` (the runner's own start-up is P4's figure, to be
added to both). The slots are created beforehand (created ahead, as a pool keeps them). The third
column the issue asks for, a suspended worker, waits for the suspended tier of worker pools.
"""

from __future__ import annotations

import asyncio
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
from bench.simjobs import Enqueuer, SimJobs
from bench.slot_burst import _make_slots
from scaler.local.server import LocalAPIServer
from scaler.local.testing import eventually

__all__ = ["run"]

JOB_S = 0.2


def _pool(app: str, queue: str, slots: int) -> dict[str, Any]:
    return {
        "name": f"p{queue[-1]}", "mode": "per-job", "app": app, "queues": [queue],
        "max_machines": 50, "image": "local/bench:latest",
        "cmd": ["python", "-m", "workers.runner"], "boot_timeout": "30s", "max_runtime": "60s",
        **({"warm_slots": slots} if slots else {}),
    }


def _measure(cfg: BenchConfig, api: LocalAPIServer, ns: str, app: str, queue: str,
             jobs: int, interval: float, settings: Any) -> list[float]:
    enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
    sent: dict[str, float] = {}
    with (
        mock.patch("scaler.loop.service.make_governor", lambda *a, **k: UnlimitedGovernor()),
        ServiceThread(settings) as svc,
        SimJobs(api, app, cfg.redis_url, ns, f"{ns}:fs") as sim,
    ):
        service = svc.service
        assert service is not None
        eventually(lambda: service.reconciler.last is not None, 20, "the first tick")
        want = settings.pools[0].warm_slots

        def slots_seen() -> bool:  # the scaler has listed the slots: the steady state
            listings = service.reconciler.observer._listings.values()
            idle = [v for li in listings for v in li.views if v.slot is not None
                    and v.state == "stopped"]
            return bool(len(idle) >= want)

        eventually(slots_seen, 20, "the slots listed")
        for _ in range(jobs):
            job, at = enq.send(queue)
            sent[job] = at
            eventually(lambda j=job: j in sim.started, 30, "the job entered",  # type: ignore[misc]
                       interval=0.02)
            time.sleep(interval)
        started = dict(sim.started)
    enq.close()
    return [(started[j] - t) * 1000 for j, t in sent.items() if j in started]


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P1b; returns ``{"rows": [...], "details": {...}}``."""
    jobs = cfg.n(6, 30, minimum=3)
    out: dict[str, list[float]] = {}
    with (
        redis_keys(cfg, "p1b") as ns,
        LocalAPIServer(runtime="sim", rate_limits="off", timings="realistic",
                       sim_run_seconds=JOB_S) as api,
        api.client() as http,
    ):
        for label, slots in (("slot", 4), ("create", 0)):
            app = f"bench-{uuid.uuid4().hex[:8]}"
            http.post("/v1/apps", json={"name": app, "org_slug": "personal"}).raise_for_status()
            queue = f"p1b{label[0]}"
            settings = scenario_settings(api_url=api.url, token=api.token,
                                         redis_url=cfg.redis_url, prefix=f"{ns}{label[0]}",
                                         pools=[_pool(app, queue, slots)])
            if slots:
                asyncio.run(_make_slots(api, settings, app, slots))
            out[label] = _measure(cfg, api, f"{ns}{label[0]}", app, queue, jobs, 2.0, settings)
    slot, create = out["slot"], out["create"]
    rows = []
    for q in (50, 99):
        s, c = percentile(slot, q), percentile(create, q)
        rows.append(row("P1b", f"enqueue -> job entered p{q}, warm slot (realistic timings)",
                        "-", s, "ms", baseline=c,
                        note=f"baseline: create; {len(slot)}/{len(create)} jobs, sim runtime; "
                             "suspended worker: not yet measured"))
    details = {"jobs": jobs, "timings": "realistic", "slot_ms": slot, "create_ms": create}
    return {"rows": rows, "details": details}
