"""R5: a 429 storm. Every create is answered 429 (Retry-After: 1) for a while, with Fly's real rate
limits on as well; then, as Fly recovers, half the creates still get a 429 and some of the others an
ambiguous answer (the machine exists, the answer is a 408) for a while; then Fly is healthy.

Holds invariant 5 (rate limits hold): no retry storm, the scaler keeps its creates at or under
Fly's published create limit (1/s with bursts of 3 per app) in every window of the storm; and
invariant 2 (no lost job): every job runs, exactly once, after the storm; and invariant 1: a job
whose create was retried through the storm still gets one machine (its retries and any relaunch
must not both succeed, one after the other machine has already finished).
"""

from __future__ import annotations

import time
from typing import Any

from chaos.harness import ChaosContext
from chaos.measure import all_ran, conclude, wait_for
from chaos.result import ScenarioResult

ID = "R5"
TITLE = "429 storm on creates"

RATE = 1.0  # Fly's create limit per app, requests per second
BURST = 3


def worst_excess(times: list[float], start: float, end: float) -> tuple[float, int, float]:
    """Over every window [t, t + w] within [start, end] that starts at a request, the largest
    excess of requests over what Fly's bucket allows (``BURST + RATE * w``); with that window's
    count and width."""
    inside = sorted(t for t in times if start <= t <= end)
    worst = (-float(BURST), 0, 0.0)
    for i, first in enumerate(inside):
        for j in range(i, len(inside)):
            width = inside[j] - first
            excess = (j - i + 1) - (BURST + RATE * width)
            if excess > worst[0]:
                worst = (excess, j - i + 1, width)
    return worst


def run(ctx: ChaosContext) -> ScenarioResult:
    """Storm, recover, then check the request timestamps and the jobs."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    cap = 4
    ctx.start_scaler(ctx.config(api, [ctx.pool(app, max_machines=cap)]), api)
    storm = ctx.seconds(4.0, 20.0)
    api.set_faults({"Machines_create": {"rate_limit_rate": 1.0}})
    began = time.monotonic()
    jobs = ctx.jobs(ctx.n(3, 10), "record")
    wait_for(lambda: False, storm)
    api.set_faults({"Machines_create": {"rate_limit_rate": 0.5, "ambiguous_rate": 0.3}}, seed=5)
    wait_for(lambda: False, storm / 2)
    api.set_faults({})
    ended = time.monotonic()
    ran = wait_for(lambda: all_ran(ctx, jobs), ctx.seconds(25, 60))
    finished = time.monotonic()
    conclude(result, ctx, api, app, jobs, cap=cap)
    creates = [r["t"] for r in api.requests("Machines_create")]
    during = [t for t in creates if began <= t <= ended]
    excess, count, width = worst_excess(creates, began, ended)
    details: dict[str, Any] = {
        "storm_s": round(ended - began, 1), "full_storm_s": storm,
        "creates_during_storm": len(during),
        "bucket_allows_during_storm": int(BURST + RATE * (ended - began)),
        "worst_window": {"requests": count, "seconds": round(width, 2)},
        "jobs_done_after_storm_s": round(finished - ended, 1) if ran else None,
    }
    result.details.update(details)
    result.check(bool(during), "set-up: no create was tried during the storm")
    # A window may straddle a refill by the local clock granularity: one request of slack.
    result.check(excess <= 1.0, f"invariant 5 (no retry storm): {count} creates within "
                                f"{width:.2f} s during the storm; Fly allows {BURST} + "
                                f"{RATE:g}/s")
    result.check(ran, "invariant 2 (no lost job): jobs still not run "
                      f"{ctx.seconds(25, 60):g} s after the storm ended")
    return result
