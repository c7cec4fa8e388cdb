"""R21: warm slots that fail, and a burst larger than the cap plus the slots.

1. Slots die mid-job: as soon as a job began on a slot, the slot's process is killed (exit 137).
2. A slot never comes up: every boot hangs in ``starting`` while the job's slot is started (the
   fault is lifted once it hangs, so the replacements boot).
3. A burst of jobs larger than ``max_machines`` + ``warm_slots`` arrives at once, while starts
   take effect 2 s late, past the tick's deadline (1 s): the next ticks plan while a slot bound
   to a job still shows stopped.

Holds invariant 2 (no lost job: a dead or never-started slot gives its job back, which runs once
more and completes once), invariant 3 (the broken slots are destroyed and replaced: the pool ends
with its idle slots, nothing else) and invariant 4 (the caps count slots bound and starting: the
burst never has more than the cap live, as the local API counts at every state change).
"""

from __future__ import annotations

from functools import partial

from chaos.harness import ChaosContext
from chaos.localapi import LocalAPI
from chaos.measure import all_ran, all_started, ours, wait_for
from chaos.result import ScenarioResult
from chaos.slotcheck import attempts, conclude_slots, is_slot, placements, wait_idle_slots

ID = "R21"
TITLE = "warm slots die, never boot; burst"

CAP, WARM = 3, 2


def hung_slot(api: LocalAPI, app: str) -> bool:
    """Whether a slot of ours hangs in ``starting``."""
    return any(is_slot(m) and m.get("state") == "starting" for m in ours(api.machines(app)))


def run(ctx: ChaosContext) -> ScenarioResult:
    """Kill slots mid-job, hang one at boot, then a burst; count runs, machines and the peak."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    pool = ctx.pool(app, max_machines=CAP, warm_slots=WARM, boot_timeout="4s")
    # A tick's calls outlive a short deadline in the background: the next tick plans while a
    # bound slot's start is still under way (phase 3).
    ctx.start_scaler(ctx.config(api, [pool], scaler={"tick_deadline": "1s"}), api)
    if not wait_idle_slots(api, app, WARM, 30):
        result.fail_with_error(f"set-up: {WARM} warm slots not made within 30 s")
        return result

    doomed = ctx.jobs(WARM, "placed", 2.0)
    result.check(wait_for(partial(all_started, ctx, doomed), 20),
                 "set-up: the jobs to kill never began on their slots")
    killed = {}
    for job, machine in placements(ctx):
        killed[job] = api.exit_machine(app, machine, 137)
    result.details["killed"] = killed
    result.check(wait_for(partial(all_ran, ctx, doomed), 30),
                 "invariant 2 (no lost job): a job whose slot died mid-job did not run again "
                 "to its end within 30 s")

    wait_idle_slots(api, app, WARM, 20)
    api.set_faults({"machines": {"never_boot_rate": 1.0}})
    stuck = ctx.jobs(1, "placed", 0.2, first=len(doomed))
    hung = wait_for(partial(hung_slot, api, app), 15)
    api.set_faults({})
    result.check(hung, "set-up: no slot hung in starting")
    result.check(wait_for(partial(all_ran, ctx, stuck), 30),
                 "invariant 2 (no lost job): the job of a slot that never came up did not run "
                 "within 30 s")

    wait_idle_slots(api, app, WARM, 20)
    # Starts take effect late: bound slots stay stopped in the listings a while, and must still
    # hold their place under the cap.
    api.set_faults({"Machines_start": {"latency": 2.0}})
    burst = ctx.jobs(ctx.n(CAP + WARM + 1, 20), "placed", 2.5,
                     first=len(doomed) + len(stuck))
    wait_for(partial(all_started, ctx, burst), ctx.seconds(10, 30))
    api.set_faults({})
    result.check(wait_for(partial(all_ran, ctx, burst), ctx.seconds(30, 60)),
                 "invariant 2 (no lost job): the burst did not run within the deadline")
    jobs = doomed + stuck + burst
    machines = conclude_slots(result, ctx, api, app, jobs, cap=CAP, warm=WARM, max_attempts=2)
    began = attempts(ctx, jobs)
    twice = {j.name: began[j.name] for j in stuck + burst if began[j.name] != 1}
    result.details["began_twice_on"] = [f"{job}@{m}" for job, m in placements(ctx)
                                        if job in twice]
    result.check(not twice, f"invariant 1 (one machine per job): a job no fault touched began "
                            f"more than once: {twice}")
    reaped = [m for m in machines if is_slot(m) and m.get("state") in ("destroying", "destroyed")]
    result.details["slots_destroyed"] = len(reaped)
    result.check(len(reaped) >= len(doomed) + 1,
                 f"invariant 3 (broken slots reaped): {len(reaped)} slots destroyed, expected "
                 f"at least the {len(doomed)} killed and the hung one")
    return result
