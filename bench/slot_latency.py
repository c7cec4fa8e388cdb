"""P1b what a user feels: enqueue -> job entered, p50/p99, with the local API's realistic timings
(a create boots in about 3 s, a start of a stopped machine in about 1 s, a resume in about
0.3 s): a per-job job on a warm slot, one that creates its machine, and a job for a worker pool
whose one worker is suspended (``warm_suspended``), in one run.

Every column runs the scaler normally against a local API with rate limits off and a governor
that never waits (the rate limit is P2's and P2c's subject). Jobs are sent one at a time, far
enough apart that each finds a free slot, or the worker suspended again.

- warm slot and create: sim runtime; "entered" is when the helper playing the runner saw the
  job's machine ``started`` (the runner's own start-up, P4's figure, is to be added to both).
  The slots are created beforehand (created ahead, as a pool keeps them).
- suspended worker: process runtime (a real ``workers.runner --drain`` process, frozen while
  suspended); "entered" is when the job function recorded its entry, so the worker's own
  latency after the resume is included and nothing is to be added.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from unittest import mock

from bench.common import (
    ROOT,
    BenchConfig,
    ServiceThread,
    UnlimitedGovernor,
    percentile,
    records,
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
SUSPEND_TIMEOUT_S = 60.0


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


def _suspended(cfg: BenchConfig, ns: str, jobs: int) -> list[float]:
    """Enqueue -> job function entered on a worker pool whose one worker is suspended."""
    import redis

    queue = "p1bw"
    env = {"PYTHONPATH": str(ROOT), "REDIS_URL": cfg.redis_url, "BENCH_QUEUE": queue,
           "SCALER_ACTORS": "bench.actors", "FLY_SCALER_NAMESPACE": ns,
           "FLY_SCALER_PREFIX": f"{ns}:fs"}
    client = redis.Redis.from_url(cfg.redis_url)
    enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
    key = f"{ns}:entered"
    out: list[float] = []
    try:
        with (
            LocalAPIServer(runtime="process", rate_limits="off", timings="realistic") as api,
            api.client() as http,
        ):
            app = f"bench-{uuid.uuid4().hex[:8]}"
            http.post("/v1/apps", json={"name": app, "org_slug": "personal"}).raise_for_status()
            pool = {"name": "pw", "mode": "worker", "app": app, "queues": [queue],
                    "max_machines": 1, "image": "local/bench:latest",
                    "cmd": ["python", "-m", "workers.runner", "--drain"], "env": env,
                    "jobs_per_machine": 1, "idle_timeout": "1s", "min_lifetime": "0s",
                    "warm_suspended": 1, "boot_timeout": "30s"}
            settings = scenario_settings(api_url=api.url, token=api.token,
                                         redis_url=cfg.redis_url, prefix=ns, pools=[pool])

            def suspended() -> bool:
                return [m.state for m in api.state.machines(app)] == ["suspended"]

            with (
                mock.patch("scaler.loop.service.make_governor",
                           lambda *a, **k: UnlimitedGovernor()),
                ServiceThread(settings),
            ):
                enq.send(queue, "entered", key)  # the first job creates the worker
                eventually(lambda: client.llen(key) >= 1, SUSPEND_TIMEOUT_S, "the worker ran")
                for n in range(jobs):
                    eventually(suspended, SUSPEND_TIMEOUT_S, "the idle worker suspended")
                    _, at = enq.send(queue, "entered", key)
                    eventually(lambda n=n: client.llen(key) >= n + 2,  # type: ignore[misc]
                               SUSPEND_TIMEOUT_S, "the job entered", interval=0.02)
                    entered = [t for event, t, _ in records(client, key) if event == "enter"]
                    out.append((entered[-1] - at) * 1000)
    finally:
        enq.close()
        client.close()
    return out


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
        out["suspended"] = _suspended(cfg, f"{ns}w", jobs)
    slot, create, susp = out["slot"], out["create"], out["suspended"]
    rows = []
    for q in (50, 99):
        s, c = percentile(slot, q), percentile(create, q)
        rows.append(row("P1b", f"enqueue -> job entered p{q}, warm slot (realistic timings)",
                        "-", s, "ms", baseline=c,
                        note=f"baseline: create; {len(slot)}/{len(create)} jobs, sim runtime; "
                             "machine started (add P4's runner start-up to both)"))
    for q in (50, 99):
        rows.append(row("P1b", f"enqueue -> job entered p{q}, suspended worker (realistic "
                        "timings)", "-", percentile(susp, q), "ms",
                        baseline=percentile(create, q),
                        note=f"baseline: create (as above); {len(susp)} jobs, process runtime, "
                             "job function entered (nothing to add)"))
    details = {"jobs": jobs, "timings": "realistic", "slot_ms": slot, "create_ms": create,
               "suspended_worker_ms": susp}
    return {"rows": rows, "details": details}
