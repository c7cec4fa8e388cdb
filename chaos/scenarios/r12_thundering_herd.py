"""R12 thundering herd: a large batch of jobs is enqueued at once, spread over several pools, each
on its own Fly app (Fly's create limit is per app: 1,000 jobs on one app would take 17 minutes of
creates), under a global cap smaller than the sum of the pool caps.

Must hold: caps at every instant (per pool: counted by the local API at every state change;
global: sampled every 50 ms), creates within Fly's limits (no 429 from the local API, which
enforces them), every job run exactly once with one machine, nothing left. Reported: the queue wait
(enqueue to the job's side effect, polled every 100 ms) at p50 and p95.

Quick: 60 jobs over 6 apps. Full: 1,000 jobs over 10 apps. Machines are real processes running the
chaos actors through ``workers.runner`` (each about 0.2 s of CPU).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from chaos.apps import new_apps
from chaos.harness import ChaosContext
from chaos.jobs import Job, side_effects
from chaos.measure import check_jobs, check_machines, live, ours, wait_for
from chaos.result import ScenarioResult
from scaler.dev.summary import percentile

ID = "R12"
TITLE = "thundering herd"

POOL_CAP = 3


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario."""
    result = ScenarioResult(ID, TITLE)
    apps_n, per_app = (6, 10) if ctx.quick else (10, 100)
    global_cap = apps_n * POOL_CAP * 2 // 3
    api = ctx.local_api()
    apps = new_apps(api, apps_n)
    setup_429s = api.rate_limited()  # app creation is rate limited too: not the scaler's
    pools, queues = [], []
    for i, app in enumerate(apps):
        q = f"{ctx.queue}{i}"
        queues.append(q)
        pools.append(ctx.pool(app, name=f"herd{i}", queue=q, max_machines=POOL_CAP))
    config = ctx.config(api, pools, scaler={"max_machines": global_cap})
    jobs: list[Job] = []
    for i, q in enumerate(queues):
        jobs += ctx.jobs(per_app, queue=q, first=i * per_app)
    enqueued = time.monotonic()
    ctx.start_scaler(config, api)

    global_peak = {"live": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                counts: dict[str, Any] = api.state().get("live", {})
                global_peak["live"] = max(global_peak["live"],
                                          sum(int(counts.get(a, 0)) for a in apps))
            except Exception:  # the API is busy: the next sample will do
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, name="r12-sampler", daemon=True)
    sampler.start()
    ctx.on_cleanup(stop.set)
    done_at: dict[str, float] = {}

    def progress() -> bool:
        runs = side_effects(ctx.redis, ctx.key)
        now = time.monotonic()
        for j in jobs:
            if runs[j.name] and j.name not in done_at:
                done_at[j.name] = now - enqueued
        return len(done_at) == len(jobs)

    budget = per_app * 1.2 + 30.0
    wait_for(progress, budget, interval=0.1)
    stop.set()
    sampler.join(5)

    result.jobs = len(jobs)
    check_jobs(result, side_effects(ctx.redis, ctx.key), jobs)
    wait_for(lambda: not any(live(ours(api.machines(a))) for a in apps), 20)
    machines = [m for a in apps for m in ours(api.machines(a))]
    check_machines(result, machines, jobs=jobs, leaked=live(machines))
    peaks = {a: api.peak_live(a) for a in apps}
    result.peak_live = global_peak["live"]
    result.cap = global_cap
    over = {f"herd{i}": p for i, (a, p) in enumerate(peaks.items()) if p > POOL_CAP}
    result.check(not over, f"invariant 4 (pool caps): peak live {over}, cap {POOL_CAP} each")
    result.check(global_peak["live"] <= global_cap,
                 f"invariant 4 (global cap): {global_peak['live']} machines live at once "
                 f"(sampled), global cap {global_cap}")
    result.rate_limited = api.rate_limited() - setup_429s
    result.check(result.rate_limited == 0,
                 f"invariant 5 (rate limits): the local API answered {result.rate_limited} "
                 "429s")
    waits = sorted(done_at.values())
    p50, p95 = percentile(waits, 50), percentile(waits, 95)
    result.details.update({
        "apps": apps_n, "pool_cap": POOL_CAP, "global_cap": global_cap,
        "pool_peaks": max(peaks.values(), default=0),
        "queue_wait_p50_s": None if p50 is None else round(p50, 2),
        "queue_wait_p95_s": None if p95 is None else round(p95, 2),
        "all_done_s": round(max(waits), 1) if len(waits) == len(jobs) else None,
    })
    return result
