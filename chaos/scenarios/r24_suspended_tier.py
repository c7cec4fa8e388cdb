"""R24: the suspended tier. A worker pool keeps one idle worker suspended (``warm_suspended =
1``) and one stopped (``warm_machines = 1``); a per-job pool with a warm slot shares its app.

1. Three jobs make workers; once idle, one is suspended, one exits and is kept stopped.
2. One job: it must go to the suspended worker (resumed), not the stopped one, and nothing is
   created.
3. Once the tier has formed again, three jobs: the suspended worker and the stopped one are
   started, and exactly one machine is created.

Holds the tier's order (suspended started before stopped, stopped before created: a warm start
is a fraction of a create), that per-job slots are never suspended (a slot's memory would carry
one job's state into the next), and invariants 1 and 2 (each job once).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from chaos.harness import ChaosContext
from chaos.jobs import side_effects
from chaos.localapi import LocalAPI
from chaos.measure import all_ran, check_jobs, live, ours, wait_for
from chaos.result import ScenarioResult
from chaos.slotcheck import is_slot, placements

ID = "R24"
TITLE = "suspended tier: order, slots never"


def _workers(api: LocalAPI, app: str) -> list[dict[str, Any]]:
    return [m for m in live(ours(api.machines(app))) if not is_slot(m)]


def _started_since(machine: dict[str, Any], since_ms: int) -> bool:
    """Whether someone asked ``machine`` to start at or after ``since_ms`` (its events)."""
    return any(e.get("type") == "start" and e.get("source") == "user"
               and int(e.get("timestamp") or 0) >= since_ms
               for e in machine.get("events") or ())


def _tier(api: LocalAPI, app: str) -> dict[str, str] | None:
    """{state: machine id} once the workers are one suspended and one stopped, else None."""
    workers = _workers(api, app)
    states = sorted(str(m.get("state")) for m in workers)
    if states != ["stopped", "suspended"]:
        return None
    return {str(m["state"]): str(m["id"]) for m in workers}


def run(ctx: ChaosContext) -> ScenarioResult:
    """Form the tier, then demand one machine, then three; who started, what was created."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    wq, sq = f"{ctx.queue}w", f"{ctx.queue}s"
    workers = {
        "name": "workers", "mode": "worker", "app": app, "queues": [wq], "max_machines": 3,
        "image": "local/chaos:latest", "cmd": ["python", "-m", "workers.runner", "--drain"],
        "env": ctx.machine_env(queue=wq), "jobs_per_machine": 1, "idle_timeout": "2s",
        "min_lifetime": "0s", "warm_suspended": 1, "warm_machines": 1, "boot_timeout": "20s",
    }
    slots = ctx.pool(app, name="slots", queue=sq, max_machines=2, warm_slots=1)
    ctx.start_scaler(ctx.config(api, [workers, slots]), api)
    key = ctx.key

    first = ctx.jobs(3, "placed", 2.0, queue=wq)
    on_slot = ctx.jobs(1, "placed", 0.2, queue=sq, first=100)
    tier: dict[str, str] = {}

    def formed() -> bool:
        found = _tier(api, app)
        if found:
            tier.clear()
            tier.update(found)
        return found is not None

    result.check(wait_for(partial(all_ran, ctx, first + on_slot), 30),
                 "invariant 2 (no lost job): the first jobs did not run within 30 s")
    if not wait_for(formed, 20):
        result.fail_with_error("set-up: the tier (one suspended worker, one stopped) did not "
                               f"form within 20 s: {[m.get('state') for m in _workers(api, app)]}")
        return result
    known = {m["id"] for m in ours(api.machines(app))}

    one = ctx.jobs(1, "placed", 0.5, queue=wq, first=10)
    result.check(wait_for(partial(all_ran, ctx, one), 20),
                 "invariant 2 (no lost job): the single job did not run within 20 s")
    where = dict(placements(ctx))
    result.details["tier"] = dict(tier)
    result.details["single_job_on"] = ("suspended" if where.get("j10") == tier["suspended"]
                                       else "stopped" if where.get("j10") == tier["stopped"]
                                       else where.get("j10"))
    result.check(where.get("j10") == tier["suspended"],
                 "suspended tier order: one job should resume the suspended worker; it ran on "
                 f"{result.details['single_job_on']}")
    made = [m for m in ours(api.machines(app)) if m["id"] not in known]
    result.check(not made, f"suspended tier order: {len(made)} machine(s) created for one job "
                           "with two warm workers")

    if not wait_for(formed, 20):
        result.fail_with_error("set-up: the tier did not form again within 20 s")
        return result
    known = {m["id"] for m in ours(api.machines(app))}
    since_ms = int(time.time() * 1000)
    three = ctx.jobs(3, "placed", 1.0, queue=wq, first=20)
    result.check(wait_for(partial(all_ran, ctx, three), 30),
                 "invariant 2 (no lost job): the three jobs did not run within 30 s")
    machines = ours(api.machines(app))
    made = [m for m in machines if m["id"] not in known]
    # Which worker then takes which job is a race between the workers (a resumed one may drain
    # two jobs before the stopped one has booted); what the scaler decided is which it started.
    started = sorted(str(m["id"]) for m in machines
                     if m["id"] in tier.values() and _started_since(m, since_ms))
    result.details["three_jobs_created"] = len(made)
    result.details["three_jobs_started"] = started
    result.check(len(made) == 1 and started == sorted(tier.values()),
                 f"suspended tier order: three jobs with two warm workers should start both and "
                 f"create one; created {len(made)}, warm workers started {started} of "
                 f"{sorted(tier.values())}")

    machines = ours(api.machines(app))
    suspended_slots = [m["id"] for m in machines if is_slot(m) and any(
        e.get("type") == "suspend" or e.get("status") == "suspended"
        for e in m.get("events") or ())]
    result.details["slots"] = sum(1 for m in machines if is_slot(m))
    result.check(not suspended_slots, f"per-job slots are never suspended: {suspended_slots}")
    jobs = first + on_slot + one + three
    result.jobs = len(jobs)
    check_jobs(result, side_effects(ctx.redis, key), jobs)
    result.peak_live, result.cap = api.peak_live(app), None
    result.rate_limited = api.rate_limited()
    return result
