"""R1: the scaler dies between Fly creating a machine and the scaler recording it.

Creates answer late (the machine exists and boots while the answer is still on its way); as soon as
a machine exists whose create has not been answered, the scaler is SIGKILLed, then started again.
The restarted scaler must adopt that machine (its deterministic name and job metadata bind it to
the claim), not create a second one. Holds invariant 1: one machine per job, each job run once.
"""

from __future__ import annotations

from chaos.harness import ChaosContext
from chaos.localapi import LocalAPI
from chaos.measure import all_ran, conclude, machines_per_job, ours, wait_for
from chaos.result import ScenarioResult

ID = "R1"
TITLE = "killed between create and recording it"


def _unanswered(api: LocalAPI, app: str, skip: set[str]) -> str | None:
    """A machine of ours that exists while its create has not been answered yet."""
    answered = {c.get("machine_id") for c in api.creates()}
    for m in ours(api.machines(app)):
        if m["id"] not in answered and m["id"] not in skip:
            return str(m["id"])
    return None


def run(ctx: ChaosContext) -> ScenarioResult:
    """Kill the scaler while creates are committed but unanswered; restart; count machines."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api(faults={"Machines_create": {"latency_after_commit": 1.5}})
    app = api.create_app()
    cap = 3
    scaler = ctx.start_scaler(ctx.config(api, [ctx.pool(app, max_machines=cap)]), api)
    jobs = ctx.jobs(ctx.n(3, 6), "work", 0.5)
    killed: set[str] = set()
    found: list[str] = []

    def hit() -> bool:
        mid = _unanswered(api, app, killed)
        if mid is not None:
            found.append(mid)
        return mid is not None

    for _ in range(ctx.n(1, 3)):
        if not wait_for(hit, 20, interval=0.02):
            break  # every job got its machine already
        scaler.kill()
        killed.add(found[-1])
        scaler.start()
    result.details["kills"] = len(killed)
    result.check(bool(killed), "set-up: no create was ever seen committed and unanswered, so the "
                               "scaler was never killed at the moment this scenario is about")
    wait_for(lambda: all_ran(ctx, jobs), 45)
    machines = conclude(result, ctx, api, app, jobs, cap=cap)
    per_job = machines_per_job(machines)
    jobs_of = {str(m["id"]): str((m["config"].get("metadata") or {}).get("fly_scaler_job"))
               for m in machines}
    result.details["machines_for_killed_creates"] = [per_job[jobs_of[m]] for m in killed
                                                     if m in jobs_of]
    return result
