"""R9: a job hangs: its machine stays ``started`` and the job never ends.

Holds invariant 3 (no leaked machine): every machine is destroyed at ``max_runtime`` (plus at most a
tick and a little slack), never kept running; and invariant 2: the hung job is retried on a new
machine and, still hanging after ``max_launches``, dead-lettered with a reason. A well-behaved job
running alongside is not disturbed.
"""

from __future__ import annotations

import time
from typing import Any

from chaos.harness import ChaosContext
from chaos.measure import all_ran, conclude, dead_letters, metadata, wait_for
from chaos.result import ScenarioResult
from scaler.loop.machines import META_JOB

ID = "R9"
TITLE = "job hangs past max_runtime"

RESYNC_S = 1.0


def lifetime(machine: dict[str, Any], now: float) -> float | None:
    """Seconds from the machine's start to the beginning of its destruction, or to ``now`` if it
    still runs (API clock); None if it never started."""
    started = ended = None
    for e in machine.get("events") or ():
        at = float(e["timestamp"]) / 1000.0
        if e.get("type") == "start" and e.get("status") == "started":
            started = at if started is None else min(started, at)
        if e.get("status") in ("destroying", "stopping") or e.get("type") == "exit":
            ended = at if ended is None else min(ended, at)
    if started is None:
        return None
    return (now if ended is None else ended) - started


def run(ctx: ChaosContext) -> ScenarioResult:
    """Hung jobs must be cut at max_runtime, retried, then dead-lettered."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    cap, launches = 3, 2
    max_runtime = ctx.seconds(3.0, 8.0)
    pool = ctx.pool(app, max_machines=cap, max_launches=launches,
                    max_runtime=f"{max_runtime:g}s")
    ctx.start_scaler(ctx.config(api, [pool], scaler={"resync_interval": f"{RESYNC_S:g}s"}),
                     api)
    hung = ctx.jobs(ctx.n(1, 2), "hang")
    fine = ctx.jobs(1, "record", first=len(hung))
    deadline = launches * (max_runtime + 3 * RESYNC_S) + 10
    result.check(wait_for(lambda: dead_letters(ctx) >= len(hung), deadline),
                 f"invariant 2: the hung job(s) were not dead-lettered within {deadline:g} s "
                 f"({dead_letters(ctx)} of {len(hung)})")
    wait_for(lambda: all_ran(ctx, fine), 10)
    machines = conclude(result, ctx, api, app, hung + fine, cap=cap,
                        may_be_dead=[j.name for j in hung], max_per_job=launches)
    hung_ids = {j.redis_message_id for j in hung}
    lives = [t for m in machines if str(metadata(m).get(META_JOB)) in hung_ids
             if (t := lifetime(m, time.time())) is not None]
    attempts = {j.name: int(ctx.redis.get(f"{ctx.key}:attempts:{j.name}") or 0) for j in hung}
    bound = max_runtime + RESYNC_S + 1.5
    result.details.update({"max_runtime_s": max_runtime, "attempts": attempts,
                           "lifetimes_s": [round(t, 2) for t in lives]})
    result.check(bool(lives), "set-up: no hung machine's start and end were seen")
    result.check(all(t <= bound for t in lives),
                 f"invariant 3 (destroyed at max_runtime): a hung machine lived "
                 f"{max(lives, default=0):.1f} s (bound: max_runtime {max_runtime:g} s + a tick "
                 f"+ slack = {bound:g} s)")
    result.check(all(n == launches for n in attempts.values()),
                 f"invariant 2 (retried, then dead-lettered): attempts per hung job {attempts}, "
                 f"expected {launches}")
    return result
