"""Measures of the warm-slot scenarios (R20-R22): which of our machines are slots, where each job
ran, and the common end of a slot scenario, where idle slots are what the pool keeps, not leaks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from chaos.harness import ChaosContext
from chaos.jobs import Job, side_effects
from chaos.localapi import LocalAPI
from chaos.measure import check_jobs, check_peak, live, metadata, ours, wait_for
from chaos.result import ScenarioResult
from scaler.loop.machines import META_SLOT

__all__ = [
    "IDLE",
    "attempts",
    "conclude_slots",
    "idle_slots",
    "is_slot",
    "placements",
    "wait_idle_slots",
]

IDLE = frozenset({"created", "stopped"})
"""States of a slot that runs nothing."""


def is_slot(machine: dict[str, Any]) -> bool:
    """Whether the machine was created as a warm slot (its metadata carries a template)."""
    return bool(metadata(machine).get(META_SLOT))


def idle_slots(api: LocalAPI, app: str) -> list[dict[str, Any]]:
    """Our slots of ``app`` that run nothing now."""
    return [m for m in ours(api.machines(app)) if is_slot(m) and m.get("state") in IDLE]


def wait_idle_slots(api: LocalAPI, app: str, n: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until ``app`` has ``n`` idle slots and no other live machine of ours; those slots
    (an empty list when that did not happen within ``timeout``)."""
    found: list[dict[str, Any]] = []

    def settled() -> bool:
        machines = live(ours(api.machines(app)))
        idle = [m for m in machines if is_slot(m) and m.get("state") in IDLE]
        found[:] = idle
        return len(idle) == n and len(machines) == n

    return found if wait_for(settled, timeout, interval=0.1) else []


def placements(ctx: ChaosContext, key: str | None = None) -> list[tuple[str, str]]:
    """(job, machine id) of every attempt of the ``placed`` actor, in the order they began."""
    out = []
    for raw in ctx.redis.lrange(f"{key or ctx.key}:at", 0, -1):
        job, _, machine = str(raw).partition("@")
        out.append((job, machine))
    return out


def attempts(ctx: ChaosContext, jobs: Iterable[Job], key: str | None = None) -> dict[str, int]:
    """How many times each job began on a machine."""
    return {j.name: int(ctx.redis.get(f"{key or ctx.key}:attempts:{j.name}") or 0) for j in jobs}


def conclude_slots(
    result: ScenarioResult, ctx: ChaosContext, api: LocalAPI, app: str, jobs: Sequence[Job], *,
    cap: int, warm: int, drain_s: float = 20.0, may_be_dead: Iterable[str] = (),
    max_attempts: int = 1,
) -> list[dict[str, Any]]:
    """The common end of a slot scenario: wait up to ``drain_s`` for the pool to settle to
    ``warm`` idle slots and nothing else, then check invariants 1 (each job ran once and began
    on at most ``max_attempts`` machines, one at a time: a second beginning is a second machine
    for the job), 2 (no lost job), 3 (nothing of ours left but the idle slots the pool keeps) and
    4 (peak live <= ``cap``, idle slots excluded by the local API as by the caps; a slot booting
    or running counts). Returns our machines, destroyed ones included."""
    result.jobs = len(jobs)
    wait_idle_slots(api, app, warm, drain_s)
    machines = ours(api.machines(app))
    check_jobs(result, side_effects(ctx.redis, ctx.key), jobs, may_be_dead=may_be_dead)
    began = attempts(ctx, jobs)
    result.max_machines_per_job = max(began.values(), default=0)
    over = {j: n for j, n in began.items() if n > max_attempts}
    result.check(not over, f"invariant 1 (one machine per job at a time): jobs began on more "
                           f"machines than allowed ({max_attempts}): {over}")
    still = live(machines)
    kept = [m for m in still if is_slot(m) and m.get("state") in IDLE]
    leaked = [m for m in still if m not in kept] + kept[warm:]
    result.leaked = len(leaked)
    result.check(not leaked, "invariant 3 (no leaked machine): left besides the pool's "
                             f"{warm} idle slots: "
                             + ", ".join(f"{m.get('name')} ({m.get('state')})" for m in leaked))
    result.check(len(kept) >= warm, f"slots refilled: {len(kept)} idle slots of {warm} after "
                                    "the drain")
    check_peak(result, ctx, api, app, cap, "caps hold, slots starting included")
    result.details["slots_made"] = sum(1 for m in machines if is_slot(m))
    result.details["machines_per_kind"] = dict(Counter(
        "slot" if is_slot(m) else "own" for m in machines))
    return machines
