"""R7: Redis stalls, then dies and comes back. The scaler's Redis (a server of the scenario's own,
persisting every write as production would) is paused with ``CLIENT PAUSE``, then SIGKILLed and
restarted on the same port, while jobs run on their machines.

Holds invariant 6 (unknown is not zero): while the queues cannot be read, nothing is scaled down,
reaped or given back (no destroy call, no busy machine lost), and ``/readyz`` goes red, then green
again after the recovery; and 1-3 over the whole run (each job once on one machine, no leak). The
outage starts once every job runs: its machine is busy, not booting.
"""

from __future__ import annotations

import threading
import time

from chaos.harness import ChaosContext
from chaos.measure import all_ran, all_started, conclude, wait_for
from chaos.result import ScenarioResult

ID = "R7"
TITLE = "Redis stall, then outage"


def run(ctx: ChaosContext) -> ScenarioResult:
    """Pause Redis, kill it, restart it, with machines mid-job; sample /readyz throughout."""
    result = ScenarioResult(ID, TITLE)
    server = ctx.private_redis(persistent=True)
    api = ctx.local_api()
    app = api.create_app()
    cap = 4
    pause, down = ctx.seconds(2.0, 7.0), ctx.seconds(3.0, 10.0)
    pool = ctx.pool(app, max_machines=cap, redis_url=server.url)
    scaler = ctx.start_scaler(ctx.config(api, [pool], redis_url=server.url), api)
    result.check(wait_for(lambda: scaler.readyz() == 200, 15), "set-up: /readyz never green")
    samples: list[tuple[float, int | None]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), scaler.readyz()))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, name="readyz-sampler", daemon=True)
    sampler.start()
    ctx.on_cleanup(stop.set)
    jobs = ctx.jobs(ctx.n(2, 3), "work", pause + down + 4.0, redis_url=server.url)
    result.check(wait_for(lambda: all_started(ctx, jobs), 20),
                 "set-up: the jobs never started on their machines")
    began = time.monotonic()
    server.pause(pause)
    wait_for(lambda: False, pause)
    server.kill()
    wait_for(lambda: False, down)
    server.start()
    back = time.monotonic()
    green_again = wait_for(lambda: scaler.readyz() == 200, 20)
    wait_for(lambda: all_ran(ctx, jobs), 30)
    stop.set()
    sampler.join(5)
    conclude(result, ctx, api, app, jobs, cap=cap)
    during = [code for t, code in samples if began <= t <= back]
    deletes = [r for r in api.requests("Machines_delete") if began <= r["t"] <= back + 1.0]
    result.details.update({
        "pause_s": pause, "down_s": down,
        "readyz_during": {str(c): during.count(c) for c in set(during)},
        "destroys_tried_during": len(deletes),
    })
    result.check(any(code != 200 for code in during),
                 "/readyz stayed green while Redis was unreachable")
    result.check(green_again, "/readyz never turned green again after Redis came back")
    result.check(not deletes, f"invariant 6 (no reaping on unknown data): {len(deletes)} "
                              "destroy call(s) while Redis was stalled or down")
    return result
