"""R3: a job's machine dies in the middle of the job and the job is delivered again.

Each job's first attempt is killed (SIGKILL, exit 137) half a second in; the scaler must give the
job back, launch it again under a new launch number, and reap the dead machine. Holds invariant 1
per launch (one machine per launch, the side effect once) and 2 (the retry happens; every message
is acked in the end, nothing left claimed or dead-lettered).
"""

from __future__ import annotations

from chaos.harness import ChaosContext
from chaos.measure import all_ran, conclude, dead_letters, machines_per_job, wait_for
from chaos.result import ScenarioResult
from scaler.jobs.claims import claims_key

ID = "R3"
TITLE = "job redelivered after its machine died"


def run(ctx: ChaosContext) -> ScenarioResult:
    """Every job dies once mid-run, then succeeds on its second launch."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    cap = 3
    ctx.start_scaler(ctx.config(api, [ctx.pool(app, max_machines=cap, max_launches=3)]), api)
    jobs = ctx.jobs(ctx.n(3, 8), "die_first", 1, 0.5)
    wait_for(lambda: all_ran(ctx, jobs), ctx.seconds(30, 60))
    machines = conclude(result, ctx, api, app, jobs, cap=cap, max_per_job=2)
    attempts = {j.name: int(ctx.redis.get(f"{ctx.key}:attempts:{j.name}") or 0) for j in jobs}
    per_job = machines_per_job(machines)
    left_claimed = ctx.redis.hlen(claims_key(ctx.prefix, ctx.queue))
    bodies_left = ctx.redis.hlen(f"{ctx.namespace}:{ctx.queue}.msgs")
    result.details.update({"attempts": attempts, "left_claimed": left_claimed,
                           "bodies_left": bodies_left})
    once_died = [j.name for j in jobs if attempts[j.name] != 2]
    result.check(not once_died, f"invariant 2 (the retry gets a new launch): attempts per job "
                                f"should be 2 (one death, one success): {attempts}")
    relaunched = [j.name for j in jobs if per_job[j.redis_message_id] != 2]
    result.check(not relaunched, "invariant 1 per launch: each job should have had exactly 2 "
                                 f"machines (the dead one and its relaunch): "
                                 f"{ {j.name: per_job[j.redis_message_id] for j in jobs} }")
    result.check(left_claimed == 0 and bodies_left == 0,
                 f"invariant 2 (acked): {left_claimed} claims and {bodies_left} message bodies "
                 "left after every job ran")
    result.check(dead_letters(ctx) == 0, "invariant 2: a job was dead-lettered although its "
                                          "second launch should succeed")
    return result
