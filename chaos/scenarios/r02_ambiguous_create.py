"""R2: Fly creates the machine, then the answer is lost: a 408, a 5xx, or a dropped connection.

Every create in a phase is ambiguous this way (one phase per kind of lost answer). The scaler must
find out what happened by looking the machine up (by its deterministic name or job metadata)
before it creates anything again: no create for a name whose machine already exists, one machine
per job, each job run once (invariant 1).
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

from chaos.harness import ChaosContext
from chaos.jobs import Job
from chaos.measure import all_ran, conclude, wait_for
from chaos.result import ScenarioResult

ID = "R2"
TITLE = "ambiguous create (408, 5xx, dropped)"

MODES = ("408", "5xx", "drop")


def blind_retries(creates: list[dict[str, Any]]) -> dict[str, int]:
    """Per machine name, the create calls that arrived after a call had already created that
    machine: each one is a retry made without looking the machine up first."""
    made_at: dict[str, float] = {}
    blind: Counter[str] = Counter()
    for c in sorted(creates, key=lambda c: c["t"]):
        name = c.get("name") or ""
        if name in made_at and c["t"] > made_at[name]:
            blind[name] += 1
        if c.get("machine_id") and name not in made_at:
            made_at[name] = c["t"]
    return dict(blind)


def run(ctx: ChaosContext) -> ScenarioResult:
    """One phase per ambiguous answer; count create calls per name and machines per job."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api(seed=2)
    app = api.create_app()
    cap = 4
    ctx.start_scaler(ctx.config(api, [ctx.pool(app, max_machines=cap)]), api)
    per_mode = ctx.n(1, 4)
    rate = 1.0 if ctx.quick else 0.6
    jobs: list[Job] = []
    for mode in MODES:
        api.set_faults({"Machines_create": {"ambiguous_rate": rate, "ambiguous_mode": mode,
                                            "error_status": 503}})
        batch = ctx.jobs(per_mode, "record", first=len(jobs))
        jobs += batch
        result.check(wait_for(partial(all_ran, ctx, batch), 25),
                     f"invariant 2 (no lost job): a job of the '{mode}' phase did not run "
                     "within 25 s")
    api.set_faults({})
    wait_for(lambda: all_ran(ctx, jobs), 20)
    conclude(result, ctx, api, app, jobs, cap=cap)
    creates = api.creates()
    blind = blind_retries(creates)
    ambiguous = [c for c in creates if c.get("machine_id") and c["status"] != 200]
    result.details.update({
        "create_calls": len(creates), "ambiguous_answers": len(ambiguous),
        "blind_retries": blind,
        "calls_per_name": max(Counter(c.get("name") for c in creates).values(), default=0),
    })
    result.check(bool(ambiguous), "set-up: no create was answered ambiguously")
    result.check(not blind, f"invariant 1 (creates resolved by name first): created again "
                            f"without looking the machine up: {blind}")
    return result
