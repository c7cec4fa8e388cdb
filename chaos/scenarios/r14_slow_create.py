"""R14 slow boot and slow create: Fly takes seconds to answer a create (the machine appears in the
listing only after a while, and the answer comes later still), and a new machine then stays
``created`` before it boots (a slow placement). Creates still pending and machines still booting
must count against the pool cap: never more machines live at once than the cap (counted by the
local API at every state change), and exactly one create call per job (no extra create because the
first one looked lost).

Each job works 2 s, so one wave's machines are still live when the next one's appear. Quick: creates
invisible 3-5 s and answered 4-8 s after they are sent, boot delayed 3 s, 3 jobs on a cap of 2,
the scaler's tick deadline 1 s. Full: answered 4-20 s after, boot delayed 60 s, 6 jobs. The claim
grace is 30 s, longer than any create takes: no claim is relaunched while its first create is
still pending, so nothing but counting pending creates and booting machines keeps the pool within
its cap.
"""

from __future__ import annotations

from chaos.creates import calls_per_job
from chaos.harness import ChaosContext
from chaos.measure import all_ran, conclude, wait_for
from chaos.result import ScenarioResult

ID = "R14"
TITLE = "slow boot / slow create"

CAP = 2
WORK_S = 2.0
"""Each job works a little, so the machines of one wave are still live when the next appears."""


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario."""
    result = ScenarioResult(ID, TITLE)
    if ctx.quick:
        create = {"latency": 3.0, "latency_after_commit": 1.0, "latency_jitter": 2.0}
        boot_delay, n = 3.0, 3
    else:
        create = {"latency": 2.0, "latency_after_commit": 2.0, "latency_jitter": 8.0}
        boot_delay, n = 60.0, 6
    faults = {"Machines_create": create, "machines": {"boot_delay": boot_delay}}
    api = ctx.local_api()
    app = api.create_app()
    api.set_faults(faults, seed=14)
    config = ctx.config(api, [ctx.pool(app, max_machines=CAP, boot_timeout="5m")],
                        scaler={"tick_deadline": "1s", "claim_grace": "30s"})
    jobs = ctx.jobs(n, "work", WORK_S)
    ctx.start_scaler(config, api)
    waves = -(-n // CAP)
    budget = waves * (boot_delay + WORK_S + 12.0) + 10.0
    finished = wait_for(lambda: all_ran(ctx, jobs), budget, interval=0.2)
    result.details["all_ran_within_s"] = budget if finished else None
    api.set_faults({})
    calls = api.creates()
    conclude(result, ctx, api, app, jobs, cap=CAP)
    per_job = calls_per_job(calls)
    names = {j.redis_message_id: j.name for j in jobs}
    extra = {names.get(k, k): c for k, c in per_job.items() if c > 1}
    result.details["create_calls"] = sum(per_job.values())
    result.check(
        sum(per_job.values()) == len(jobs) and not extra,
        f"no extra creates: {sum(per_job.values())} create calls for {len(jobs)} jobs"
        + (f" (more than one for {extra})" if extra else ""),
    )
    return result
