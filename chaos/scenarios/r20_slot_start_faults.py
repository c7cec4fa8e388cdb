"""R20: warm slots under start faults. A per-job pool keeps warm slots; jobs are bound to them
(in Redis, fenced) and the slots started. Phase by phase:

1. the scaler is SIGKILLed between binding a job to a slot and that slot starting (starts take
   effect 1.5 s late, so the kill lands while the start is in flight), then restarted;
2. every start is refused (412 insufficient capacity): the slot never comes up;
3. a storm of 5xx and 429 answers to starts;
4. starts take effect but their answer comes after the client's timeout (an ambiguous start).

Holds invariant 1 (one machine per job at a time: each job begins exactly once, on one machine,
whatever became of its slot's start), invariant 2 (no lost job: a slot that never started gives
its job back after ``claim_grace`` and is replaced), invariant 3 (the pool is left with its idle
slots and nothing else) and invariant 4 (peak live within the cap, bound slots included).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from chaos.harness import ChaosContext
from chaos.jobs import Job
from chaos.localapi import LocalAPI
from chaos.measure import all_ran, wait_for
from chaos.result import ScenarioResult
from chaos.slotcheck import conclude_slots, wait_idle_slots

ID = "R20"
TITLE = "warm slots: crash at bind, start faults"

CAP, WARM = 3, 2

PHASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("refused", {"capacity_rate": 1.0}),
    ("5xx and 429", {"rate_limit_rate": 0.5, "error_rate": 1.0}),
    ("answer lost", {"latency_after_commit": 3.0}),
)


def bound_not_started(ctx: ChaosContext, api: LocalAPI, app: str) -> str | None:
    """A slot bound to a claim that is still waiting for its machine to start, if any."""
    states = {m["id"]: m.get("state") for m in api.machines(app)}
    for machine, raw in ctx.redis.hgetall(f"{ctx.prefix}:slots").items():
        binding = json.loads(raw)
        claim = ctx.redis.hget(f"{ctx.prefix}:claims:{binding['queue']}", binding["job"])
        if claim and json.loads(claim).get("state") == "claimed" \
                and states.get(machine) in ("created", "stopped"):
            return str(machine)
    return None


def faulted_starts(api: LocalAPI) -> int:
    """Start calls answered with an error so far."""
    return sum(1 for r in api.requests("Machines_start") if int(r.get("status", 200)) >= 400)


def _more_starts(api: LocalAPI, than: int) -> bool:
    return len(api.requests("Machines_start")) > than


def run(ctx: ChaosContext) -> ScenarioResult:
    """Kill at bind, then a phase per start fault; every job once, the slots kept."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    pool = ctx.pool(app, max_machines=CAP, warm_slots=WARM)
    config = ctx.config(api, [pool])
    config["fly"]["timeout"] = "2s"  # phase 4's answers come after it
    scaler = ctx.start_scaler(config, api)
    if not wait_idle_slots(api, app, WARM, 30):
        result.fail_with_error(f"set-up: {WARM} warm slots not made within 30 s")
        return result
    per = ctx.n(1, 3)
    jobs: list[Job] = []

    api.set_faults({"Machines_start": {"latency": 1.5}})
    batch = ctx.jobs(per, "placed", 0.2)
    jobs += batch
    hit = wait_for(lambda: bound_not_started(ctx, api, app), 15, interval=0.02)
    scaler.kill()
    api.set_faults({})
    scaler.start()
    result.details["killed_at_bind"] = hit
    result.check(hit, "set-up: no job was ever seen bound to a slot that had not started, so "
                      "the scaler was never killed at the moment this phase is about")
    result.check(wait_for(partial(all_ran, ctx, batch), 30),
                 "invariant 2 (no lost job): a job bound when the scaler died did not run "
                 "within 30 s")
    faulted: dict[str, int] = {}
    for name, spec in PHASES:
        wait_idle_slots(api, app, WARM, 20)
        before, calls = faulted_starts(api), len(api.requests("Machines_start"))
        api.set_faults({"Machines_start": spec}, seed=len(jobs))
        batch = ctx.jobs(per, "placed", 0.2, first=len(jobs))
        jobs += batch
        wait_for(partial(_more_starts, api, calls), 10)
        wait_for(lambda: False, ctx.seconds(2.5, 6.0))  # the fault holds a while after
        faulted[name] = faulted_starts(api) - before
        api.set_faults({})
        result.check(wait_for(partial(all_ran, ctx, batch), 30),
                     f"invariant 2 (no lost job): a job of the '{name}' phase did not run "
                     "within 30 s")
    result.details["faulted_starts"] = faulted
    result.check(all(faulted[n] for n, _ in PHASES[:2]),
                 f"set-up: a start-fault phase saw no faulted start: {faulted}")
    conclude_slots(result, ctx, api, app, jobs, cap=CAP, warm=WARM)
    return result
