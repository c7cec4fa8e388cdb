"""R10: the orphan sweep. Before the scaler starts, the app already holds: a machine of ours bound
to a job nobody knows, one of ours whose job has already finished, one of another scaler (another
``fly_scaler`` id) and one that is nobody's (no metadata of ours at all).

Holds invariant 3: our two orphans are first marked, then destroyed once ``orphan_grace`` has
passed since the mark (never before); the other scaler's machine and the foreign one are never
touched (no stop, no destroy, no update). Jobs running meanwhile run exactly once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from chaos.harness import ChaosContext
from chaos.measure import all_ran, conclude, wait_for
from chaos.result import ScenarioResult
from scaler.loop.machines import META_JOB, META_LAUNCH, META_POOL, META_QUEUE, META_SCALER

ID = "R10"
TITLE = "orphan sweep"


def _ours(ctx: ChaosContext, job: str, scaler_id: str = "fly-scaler") -> dict[str, str]:
    return {META_SCALER: scaler_id, META_POOL: "jobs", META_QUEUE: ctx.queue, META_JOB: job,
            META_LAUNCH: "1"}


def _finished_job(ctx: ChaosContext) -> str:
    """A message that was enqueued and acked (gone from the queue): a finished job's id."""
    [job] = ctx.jobs(1, "record", first=99)
    ctx.redis.lrem(f"{ctx.namespace}:{ctx.queue}", 0, job.redis_message_id)
    ctx.redis.hdel(f"{ctx.namespace}:{ctx.queue}.msgs", job.redis_message_id)
    return job.redis_message_id


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def run(ctx: ChaosContext) -> ScenarioResult:
    """Seed orphans and strangers, run the scaler, see what it marked and destroyed, and when."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    seeds = {
        "ours, unknown job": api.plant(app, _ours(ctx, str(uuid.uuid4()))),
        "ours, finished job": api.plant(app, _ours(ctx, _finished_job(ctx))),
        "another scaler's": api.plant(app, _ours(ctx, str(uuid.uuid4()), "someone-else")),
        "nobody's": api.plant(app, {"role": "web"}),
    }
    seeding_429s = api.rate_limited()  # ours, not the scaler's
    orphans = {seeds["ours, unknown job"], seeds["ours, finished job"]}
    strangers = {seeds["another scaler's"], seeds["nobody's"]}
    grace = ctx.seconds(3.0, 10.0)
    cap = 3
    scaler = ctx.start_scaler(ctx.config(api, [ctx.pool(app, max_machines=cap)],
                                         scaler={"orphan_grace": f"{grace:g}s"}), api)
    jobs = ctx.jobs(ctx.n(2, 5), "record")

    def states() -> dict[str, str]:
        return {str(m["id"]): str(m["state"]) for m in api.machines(app)}

    swept = wait_for(lambda: all(states()[m] == "destroyed" for m in orphans), grace + 20)
    wait_for(lambda: all_ran(ctx, jobs), 10)
    wait_for(lambda: False, 1.0)  # a last tick or two in which strangers could be touched
    conclude(result, ctx, api, app, jobs, cap=None)
    result.rate_limited = api.rate_limited() - seeding_429s
    marked = {str(e["machine"]): _at(e) for e in scaler.events("orphan marked")}
    destroyed = {str(e["machine"]): (_at(e), str(e.get("reason"))) for e in
                 scaler.events("machine destroyed")}
    machines = {str(m["id"]): m for m in api.machines(app)}
    touched = {
        name: [e.get("type") for e in machines[mid].get("events") or ()
               if e.get("type") not in ("launch", "start")]
        for name, mid in seeds.items() if mid in strangers
    }
    result.details.update({
        "orphan_grace_s": grace,
        "seeds": {name: states()[mid] for name, mid in seeds.items()},
        "mark_to_destroy_s": {
            name: round(destroyed[mid][0] - marked[mid], 2) if mid in destroyed and mid in marked
            else None for name, mid in seeds.items() if mid in orphans},
    })
    result.check(swept, "invariant 3 (no leaked machine): our orphans were not destroyed "
                        f"within orphan_grace + 20 s: {result.details['seeds']}")
    for name, mid in seeds.items():
        if mid in orphans and mid in destroyed:
            result.check(mid in marked, f"invariant 3 (marked before destroyed): {name} was "
                                        "destroyed without being marked first")
            if mid in marked:
                waited = destroyed[mid][0] - marked[mid]
                result.check(waited >= grace - 0.5,
                             f"invariant 3 (orphan grace): {name} destroyed {waited:.1f} s "
                             f"after its mark (grace {grace:g} s)")
    result.check(not any(touched.values()) and all(states()[m] == "started" for m in strangers),
                 f"invariant 3 (others' machines are never touched): {touched}, "
                 f"{ {n: states()[m] for n, m in seeds.items() if m in strangers} }")
    return result


