"""R6: the Fly API is down. Every call's connection is dropped unanswered (no effect), for a while,
with jobs running on their machines throughout and, late in the outage, more jobs arriving; then
Fly comes back.

Holds invariant 6 (unknown is not zero): nothing is destroyed, given back or dead-lettered on
missing data during the outage; the scaler's calls stay bounded (no hammering); it converges
within two ticks of the recovery (the jobs that arrived during the outage get machines); and 1-3
over the whole run.
"""

from __future__ import annotations

import time

from chaos.harness import ChaosContext
from chaos.jobs import Job
from chaos.localapi import LocalAPI
from chaos.measure import all_ran, conclude, live, ours, wait_for
from chaos.result import ScenarioResult
from chaos.scalerproc import ScalerProc

ID = "R6"
TITLE = "Fly API outage"

RESYNC_S = 1.0
MAX_CALLS_PER_S = 3.0
"""Fly's limits are 1/s per action and app: listing, plus a create or two, retried with backoff."""
SETTLING = ("fly_scaler_reaps_total", "fly_scaler_jobs_requeued_total",
            "fly_scaler_jobs_dead_lettered_total")


def _settled(scaler: ScalerProc) -> float:
    """Reaps, give-backs and dead letters the scaler counted so far."""
    return sum(scaler.metric(name) for name in SETTLING)


def _machine_for_each(api: LocalAPI, app: str, jobs: list[Job]) -> bool:
    names = {str((m["config"].get("metadata") or {}).get("fly_scaler_job"))
             for m in ours(api.machines(app))}
    return all(j.redis_message_id in names for j in jobs)


def run(ctx: ChaosContext) -> ScenarioResult:
    """Busy machines, then an outage with new jobs, then recovery."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    cap = 4
    outage = ctx.seconds(10.0, 60.0)
    work = outage + 2.0  # the first jobs still run when Fly is back
    pool = ctx.pool(app, max_machines=cap, max_runtime=f"{work + 30:g}s")
    config = ctx.config(api, [pool], scaler={"resync_interval": f"{RESYNC_S:g}s",
                                             "claim_grace": "1s"})
    scaler = ctx.start_scaler(config, api)
    busy = ctx.jobs(ctx.n(2, 3), "work", work)
    result.check(wait_for(lambda: len([m for m in live(ours(api.machines(app)))
                                       if m["state"] == "started"]) >= len(busy), 20),
                 "set-up: the first jobs' machines never started")
    settled_before = _settled(scaler)
    ticks_before = scaler.metric("fly_scaler_ticks_total")
    api.set_faults({"*": {"drop_rate": 1.0}})
    down = time.monotonic()
    wait_for(lambda: False, outage * 2 / 3)  # ticks that see only the outage
    late = ctx.jobs(ctx.n(2, 4), "record", first=len(busy))
    wait_for(lambda: False, outage / 3)
    settled_during = _settled(scaler) - settled_before
    ticks = scaler.metric("fly_scaler_ticks_total") - ticks_before
    api.set_faults({})
    up = time.monotonic()
    converged = wait_for(lambda: _machine_for_each(api, app, late), 20, interval=0.05)
    converge_s = time.monotonic() - up
    jobs = busy + late
    wait_for(lambda: all_ran(ctx, jobs), work + 10)
    conclude(result, ctx, api, app, jobs, cap=cap)
    calls = [r for r in api.requests() if down <= r["t"] <= up]
    deletes = [r for r in calls if r["operation"] == "Machines_delete"]
    per_s = len(calls) / max(up - down, 1.0)
    result.details.update({
        "outage_s": round(up - down, 1), "calls_during_outage": len(calls),
        "ticks_during_outage": ticks, "calls_per_s": round(per_s, 2),
        "destroys_tried_during_outage": len(deletes),
        "settled_during_outage": settled_during,
        "converged_after_s": round(converge_s, 1) if converged else None,
    })
    result.check(bool(calls), "set-up: the scaler made no call during the outage")
    result.check(not deletes, f"invariant 6 (no destroy on missing data): {len(deletes)} "
                              "destroy call(s) during the outage")
    result.check(settled_during == 0, "invariant 6 (unknown is not zero): the scaler reaped, "
                                      f"gave back or dead-lettered {settled_during:g} time(s) "
                                      "during the outage")
    result.check(per_s <= MAX_CALLS_PER_S,
                 f"invariant 6 (bounded calls): {len(calls)} calls in {up - down:.0f} s of outage "
                 f"({per_s:.1f}/s; bound {MAX_CALLS_PER_S:g}/s)")
    bound = 2 * RESYNC_S + 2.0
    result.check(converged and converge_s <= bound,
                 f"convergence after recovery: the jobs that arrived during the outage got "
                 f"machines {converge_s:.1f} s after Fly came back (bound: two ticks, {bound:g} s)"
                 if converged else "convergence after recovery: the jobs that arrived during the "
                                   "outage never got machines within 20 s")
    return result
