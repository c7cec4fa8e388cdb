"""R8: machines die mid-job (the main process ends with exit 137, as an OOM kill would), every
launch of some jobs; afterwards the machines behave again.

Holds invariant 2 (no lost job): each death gives the job back promptly (the next launch is
created within a few ticks of the exit), and after ``max_launches`` machines the job is
dead-lettered with a reason, never retried forever nor dropped; invariant 3 (each dead machine is
destroyed, nothing leaks); and the jobs enqueued after the faults run exactly once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from chaos.harness import ChaosContext
from chaos.measure import all_ran, conclude, dead_letters, machines_per_job, metadata, wait_for
from chaos.result import ScenarioResult
from scaler.jobs.claims import dead_reasons_key
from scaler.loop.machines import META_JOB, META_LAUNCH

ID = "R8"
TITLE = "machines die mid-job (exit 137)"

RESYNC_S = 1.0


def _event_s(machine: dict[str, Any], type_: str) -> float | None:
    """When the machine's newest event of ``type_`` happened (API clock, seconds)."""
    for e in machine.get("events") or ():  # newest first
        if e.get("type") == type_:
            return float(e["timestamp"]) / 1000.0
    return None


def give_back_gaps(machines: list[dict[str, Any]]) -> list[float]:
    """Per job, seconds from each launch's machine exiting to the next launch's machine created."""
    by_job: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for m in machines:
        md = metadata(m)
        by_job[str(md.get(META_JOB))][int(md.get(META_LAUNCH) or 0)] = m
    gaps = []
    for launches in by_job.values():
        for n, m in launches.items():
            later = launches.get(n + 1)
            exited = _event_s(m, "exit")
            if later is not None and exited is not None:
                created = _event_s(later, "launch")
                if created is not None:
                    gaps.append(round(created - exited, 2))
    return gaps


def run(ctx: ChaosContext) -> ScenarioResult:
    """Every launch of the first jobs dies; they must end in the dead letters."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api(faults={"machines": {"crash_rate": 1.0, "crash_after": 0.7,
                                             "crash_exit_code": 137}})
    app = api.create_app()
    cap, launches = 3, ctx.n(2, 3)
    pool = ctx.pool(app, max_machines=cap, max_launches=launches)
    ctx.start_scaler(ctx.config(api, [pool], scaler={"resync_interval": f"{RESYNC_S:g}s"}),
                     api)
    doomed = ctx.jobs(ctx.n(2, 4), "work", 3.0)
    result.check(wait_for(lambda: dead_letters(ctx) >= len(doomed), ctx.seconds(30, 60)),
                 f"invariant 2 (dead-letter after max launches): {dead_letters(ctx)} of "
                 f"{len(doomed)} always-dying jobs dead-lettered")
    api.set_faults({})
    fine = ctx.jobs(ctx.n(2, 4), "record", first=len(doomed))
    wait_for(lambda: all_ran(ctx, fine), 20)
    machines = conclude(result, ctx, api, app, doomed + fine, cap=cap,
                        may_be_dead=[j.name for j in doomed], max_per_job=launches)
    per_job = machines_per_job(machines)
    attempts = {j.name: int(ctx.redis.get(f"{ctx.key}:attempts:{j.name}") or 0) for j in doomed}
    reasons = ctx.redis.hgetall(dead_reasons_key(ctx.prefix, ctx.queue))
    gaps = give_back_gaps(machines)
    bound = 3 * RESYNC_S + 2.0
    result.details.update({
        "max_launches": launches, "attempts": attempts,
        "machines_per_doomed_job": [per_job[j.redis_message_id] for j in doomed],
        "dead_reasons": sorted({str(json.loads(v).get("reason")) for v in reasons.values()}),
        "give_back_s": {"max": max(gaps, default=None), "all": gaps},
    })
    short = {j.name: per_job[j.redis_message_id] for j in doomed
             if per_job[j.redis_message_id] != launches}
    result.check(not short, f"invariant 2: a dying job should get exactly max_launches="
                            f"{launches} machines before its dead letter: {short}")
    result.check(all(j.redis_message_id in reasons for j in doomed),
                 "invariant 2: a dead-lettered job has no recorded reason")
    result.check(not gaps or max(gaps) <= bound,
                 f"invariant 2 (given back within a tick or two): a job waited "
                 f"{max(gaps, default=0):.1f} s between its machine's death and the next launch "
                 f"(bound {bound:g} s)")
    return result
