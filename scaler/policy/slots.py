"""Warm per-job slots: which stopped machines of a per-job pool jobs may run on, which are
replaced, and how many are created ahead. Pure, like the rest of the planner.

A slot is a machine of a per-job pool created ahead with the pool's template, never started
(``created``) or stopped after its last job. Its metadata ``fly_scaler_slot`` carries the
fingerprint of the template it was made from (``PoolPolicy.slot_template``). Rules:

- An idle slot (``created`` or ``stopped``) that no claim owns is *free*, unless it must be
  replaced: another template (new jobs never run on an old template; a slot busy on the old one
  finishes its job first, then goes), ``slot_max_jobs`` jobs run, older than ``slot_max_age_s``,
  or more slots than ``warm_slots``. Those are destroyed (not forced: they are stopped).
- Free slots count against no cap (they cost no CPU; caps count what runs or may start). A slot
  bound to a job counts from the moment it is bound (its claim holds a place, as a claim whose
  machine is being created does), and once started it is a live machine like any other.
- Ready jobs go to free slots first (a start: no create token; Fly limits starts per machine,
  not per app), then to creates as before. Missing slots are created after the tick's launches
  with what is left of the app's create budget.
- A claim bound to a slot that is idle: the start is under way until ``claim_grace_s`` after the
  binding; past that, or once the runner had taken the job (the slot stopped mid-job), the slot
  is destroyed and the job requeued or dead-lettered as for any machine that died (a slot that
  fails is replaced, never reused).
- A slot boots once as it is created (no job: the runner exits) and is left alone meanwhile. A
  started slot that has run jobs and has no claim is judged by the per-job reaper as any machine
  (its job finished: left to exit; otherwise an orphan), so a slot whose binding is stale is
  reaped too.
"""

from __future__ import annotations

from collections.abc import Mapping

from scaler.policy.builder import PlanBuilder
from scaler.policy.index import AppIndex
from scaler.policy.reaper import verdict
from scaler.policy.states import is_gone
from scaler.policy.types import (
    ClaimView,
    Destroy,
    MachineView,
    PoolPolicy,
    RequeueOrDeadLetter,
    SlotCreate,
)

__all__ = ["IDLE_SLOT_STATES", "free_slots", "is_idle_slot", "judge_slot_claim", "refill_slots"]

IDLE_SLOT_STATES = frozenset({"created", "stopped"})
"""States of a slot that runs nothing and starts only when the scaler starts it."""


def is_idle_slot(m: MachineView) -> bool:
    """Whether ``m`` is a slot that runs nothing now (it counts against no cap)."""
    return m.slot is not None and m.state in IDLE_SLOT_STATES


def _replace_reason(
    pool: PoolPolicy, m: MachineView, jobs: Mapping[str, int], now: float
) -> str | None:
    if m.slot != pool.slot_template:
        return "slot_template"
    if pool.slot_max_jobs is not None and jobs.get(m.id, 0) >= pool.slot_max_jobs:
        return "slot_max_jobs"
    age = now - m.created_at if m.created_at else 0.0
    if pool.slot_max_age_s is not None and age >= pool.slot_max_age_s:
        return "slot_max_age"
    return None


def free_slots(
    pool: PoolPolicy,
    idx: AppIndex,
    slot_jobs: Mapping[str, int] | None,
    now: float,
    out: PlanBuilder,
    owned: set[str],
) -> list[MachineView]:
    """Judge the pool's idle slots that no claim owns: destroy those to replace, keep the rest
    (added to ``owned``, so no other rule reaps them) and return them, oldest first.

    With ``slot_jobs`` unknown, nothing is bound or replaced (unknown is not zero), but idle slots
    are still kept."""
    idle = [
        m for m in idx.by_pool.get(pool.name, ())
        if is_idle_slot(m) and m.id not in owned and not out.touched(m)
    ]
    for m in idx.by_pool.get(pool.name, ()):
        # A slot's first boot, as it is created: no job, it stops by itself (not an orphan).
        warming = slot_jobs is not None and not slot_jobs.get(m.id) and m.finished_at is None
        if (m.slot is not None and warming and not is_idle_slot(m) and not is_gone(m.state)
                and m.id not in owned and verdict(m, pool, now) is None):
            owned.add(m.id)
    if slot_jobs is None:
        owned.update(m.id for m in idle)
        if idle:
            out.tally.count(pool.name, "launch", "unknown_data", "not_taken")
        return []
    keep: list[MachineView] = []
    for m in sorted(idle, key=lambda v: (v.created_at, v.id)):
        reason = _replace_reason(pool, m, slot_jobs, now)
        if reason is not None:
            out.destroy(pool.name, m, reason, False)
        else:
            keep.append(m)
    busy = sum(
        1 for m in idx.by_pool.get(pool.name, ())
        if m.slot == pool.slot_template and not is_idle_slot(m) and not is_gone(m.state)
        and not out.touched(m)
    )
    # Busy slots beyond warm_slots cannot go yet (they finish their jobs): only idle ones can.
    excess = min(len(keep), max(0, busy + len(keep) - pool.warm_slots))
    for m in reversed(keep[len(keep) - excess:] if excess else []):
        out.destroy(pool.name, m, "slot_excess", False)
    keep = keep[: len(keep) - excess]
    owned.update(m.id for m in keep)
    return keep


def refill_slots(
    pool: PoolPolicy, idx: AppIndex, inflight: int, budget: int, room: int, out: PlanBuilder,
    cap_reason: str = "cap_pool",
) -> int:
    """Plan the creates of missing slots with at most ``budget`` create tokens and within
    ``room`` under the caps (``cap_reason`` names the tightest); return how many.

    Every slot of the current template that is not going away counts, busy or idle, and so do
    the pool's creates still in flight (they may be slots: never create past ``warm_slots``). A
    new slot boots once before it waits stopped, so it needs room under the caps like any
    machine that boots: caps count it from its create until it is seen stopped."""
    going = {a.machine.id for a in out.actions if isinstance(a, Destroy)}
    have = sum(
        1 for m in idx.by_pool.get(pool.name, ())
        if m.slot == pool.slot_template and not is_gone(m.state) and m.id not in going
    )
    missing = max(0, pool.warm_slots - have - max(0, inflight))
    n = min(missing, max(0, budget), max(0, room))
    if n:
        out.add(SlotCreate(pool.name, pool.app, n))
        out.tally.count(pool.name, "create", "warm_slots", "acted", n)
    if missing > n:
        reason = "rate_limit" if budget < min(missing, room) else cap_reason
        out.tally.count(pool.name, "create", reason, "not_taken", missing - n)
    return n


def judge_slot_claim(
    pool: PoolPolicy, c: ClaimView, m: MachineView, now: float, out: PlanBuilder
) -> None:
    """A claim bound to an idle slot: wait for its start within ``claim_grace_s`` of the binding;
    after that, or when the runner had already taken the job (it died with the slot), destroy the
    slot and requeue (or dead-letter) the job."""
    bound_at = max(c.claimed_at, c.updated_at or c.claimed_at)
    due = bound_at + pool.claim_grace_s
    if c.state == "claimed" and now < due:
        out.tally.count(pool.name, "wait", "slot_starting", "not_taken")
        out.wake(due)
        return
    reason = "slot_stopped" if c.state == "running" else "slot_not_started"
    out.destroy(pool.name, m, reason, False)  # or already destroyed in this plan: either way
    out.claim_action(RequeueOrDeadLetter(pool.name, c, reason, pool.max_launches, m.id), "requeue")
