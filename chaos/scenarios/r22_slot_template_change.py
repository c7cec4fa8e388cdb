"""R22: the slot template changes under load. Jobs run on the warm slots of template 1; the
scaler is redeployed (SIGTERM, then a new one) with the pool's template changed (its machine
metadata), while those jobs still run and new jobs arrive.

Holds the slot rule of invariant 1 (a job runs on its pool's current machine): no job enqueued
after the change begins on a slot of the old template; the jobs in flight on old slots finish
there, once each, not killed nor run again (invariant 2); the old slots are destroyed once idle and
the pool ends with idle slots of the new template only (invariant 3); the caps hold throughout
(invariant 4).
"""

from __future__ import annotations

from functools import partial

from chaos.harness import ChaosContext
from chaos.measure import all_ran, all_started, metadata, ours, wait_for
from chaos.result import ScenarioResult
from chaos.slotcheck import attempts, conclude_slots, is_slot, placements, wait_idle_slots
from scaler.loop.machines import META_SLOT

ID = "R22"
TITLE = "slot template change under load"

CAP, WARM = 4, 2


def run(ctx: ChaosContext) -> ScenarioResult:
    """Busy old slots, a redeploy with a new template, new jobs; where did each job run."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()

    def config(release: str) -> dict[str, object]:
        pool = ctx.pool(app, max_machines=CAP, warm_slots=WARM, metadata={"release": release})
        return ctx.config(api, [pool])

    first = ctx.start_scaler(config("1"), api, name="a")
    old = {m["id"]: metadata(m)[META_SLOT] for m in wait_idle_slots(api, app, WARM, 30)}
    if not old:
        result.fail_with_error(f"set-up: {WARM} warm slots not made within 30 s")
        return result
    inflight = ctx.jobs(WARM, "placed", ctx.seconds(4.0, 8.0))
    result.check(wait_for(partial(all_started, ctx, inflight), 20),
                 "set-up: the jobs in flight never began")
    on_old = {job: machine for job, machine in placements(ctx)}
    first.terminate()
    ctx.start_scaler(config("2"), api, name="b")
    later = ctx.jobs(ctx.n(4, 12), "placed", 0.5, first=len(inflight))
    result.check(wait_for(partial(all_ran, ctx, inflight + later), 40),
                 "invariant 2 (no lost job): not every job ran within 40 s of the change")
    jobs = inflight + later
    machines = conclude_slots(result, ctx, api, app, jobs, cap=CAP, warm=WARM)
    templates = {m["id"]: metadata(m).get(META_SLOT) for m in ours(api.machines(app))
                 if is_slot(m)}
    new_template = {t for i, t in templates.items() if i not in old}
    placed = placements(ctx)
    stale = [f"{job}@{machine}" for job, machine in placed
             if job not in on_old and machine in old]
    moved = {j.name: on_old.get(j.name) for j in inflight
             if [m for job, m in placed if job == j.name] != [on_old.get(j.name)]}
    began = attempts(ctx, jobs)
    result.details.update({
        "old_slots": sorted(old), "templates": len(set(old.values()) | new_template),
        "in_flight_on": on_old, "new_jobs_on_old_slots": stale,
    })
    result.check(set(on_old.values()) <= set(old),
                 f"set-up: the jobs in flight did not run on the old slots: {on_old}")
    result.check(not stale, f"invariant 1 (new jobs never run on an old template): {stale}")
    result.check(not moved and all(began[j.name] == 1 for j in inflight),
                 f"invariant 2 (in-flight jobs finish on their old slot, once): {moved}, "
                 f"began {[began[j.name] for j in inflight]}")
    gone = {m["id"] for m in machines if m.get("state") in ("destroying", "destroyed")}
    result.check(set(old) <= gone, f"invariant 3 (old slots replaced): still there: "
                                   f"{sorted(set(old) - gone)}")
    return result
