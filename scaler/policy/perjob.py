"""Per-job pools: each claim keeps exactly one machine, or its job goes back or to the dead letters.

For each claim, its machine is found by id (once the create returned), else by deterministic name,
else by (job, launch) metadata, in the app recorded in the claim. Then:

- invalid per-job machine options, or a create Fly refused for good while the job's own options
  shaped its machine -> DeadLetter with the reason (after destroying any machine it has); a
  refusal of the pool's own template only backs off, as any create that made no machine;
- machine destroyed, destroying, launch_failed -> RequeueOrDeadLetter;
- machine condemned by the reaper (stopped, failed, wedged, never booted, over max runtime) ->
  Destroy + RequeueOrDeadLetter. A boot timeout counts as a failed launch on purpose: an image that
  never boots ends in the dead letters after ``max_launches`` instead of looping forever;
- no machine visible:

  - a create may still be under way (``create_pending_until``): wait, never relaunch over it;
  - no create ever returned: Relaunch under the same name (idempotent) once ``claim_grace_s`` has
    passed since the claim, or, after a create that made no machine, once the backoff has passed
    (``claim_grace_s`` doubled per failed attempt, up to ``relaunch_backoff_max_s``);
  - a create returned (or the runner took the job) but no listing shows the machine past
    ``claim_grace_s``: Destroy that machine id (a lagging listing must not let it run the job
    while another launch does), then RequeueOrDeadLetter.

A machine whose job finished (the runner recorded it as it ended the claim) is exiting by itself:
it is left alone, counted live until it is gone, and destroyed (``finished_lingering``) only if it
is still there ``orphan_grace_s`` after. Any other machine of the pool that no claim owns is an
orphan once claims are known: first MarkOrphan, then Destroy after ``orphan_grace_s``.

Claims that no per-job pool owns any more (the pool was removed, or turned into a worker pool, and
no other per-job pool serves the queue) keep their machine until the job ends; a machine that dies,
or none at all, gives the job back to its queue (:func:`settle_ownerless`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scaler.policy.builder import PlanBuilder
from scaler.policy.index import AppIndex, ClaimIndex, claim_machine
from scaler.policy.reaper import Verdict, reap_finished, reap_orphan, verdict
from scaler.policy.slots import is_idle_slot, judge_slot_claim
from scaler.policy.states import is_gone
from scaler.policy.types import (
    ClaimView,
    DeadLetter,
    GiveBack,
    MachineView,
    Observation,
    PoolPolicy,
    QueueView,
    RequeueOrDeadLetter,
)

__all__ = [
    "OWNERLESS_LIMITS",
    "QueueDemand",
    "launch_demand",
    "reap",
    "relaunch_due",
    "release_claims",
    "release_claims_of_destroyed",
    "settle_ownerless",
]

OWNERLESS_LIMITS = PoolPolicy(name="(none)", mode="per-job", app="-", queues=(), max_machines=0)
"""The reaper's limits for the machine of a claim no pool owns: the defaults of a pool."""


def relaunch_due(pool: PoolPolicy, c: ClaimView) -> float:
    """When a claim without a machine may be created again: ``claim_grace_s`` after the claim (or
    its last change), or, after a create that made no machine, ``claim_grace_s`` doubled per
    failed attempt (capped at ``relaunch_backoff_max_s``) after that failure."""
    if c.create_failed_at is not None:
        step = pool.claim_grace_s * 2.0 ** max(0, c.create_attempts - 1)
        return c.create_failed_at + min(pool.relaunch_backoff_max_s, step)
    return max(c.claimed_at, c.updated_at or c.claimed_at) + pool.claim_grace_s


def _pending(c: ClaimView, now: float) -> bool:
    return c.create_pending_until is not None and now < c.create_pending_until


def release_claims(
    pool: PoolPolicy,
    apps: Mapping[str, AppIndex],
    claims: ClaimIndex,
    now: float,
    out: PlanBuilder,
    owned: set[str],
) -> list[ClaimView]:
    """Plan the claim releases of one per-job pool.

    Adds the ids of the machines its claims own to ``owned`` (no other rule may reap those), and
    returns the claims that need a Relaunch, oldest first (the caller checks budget). A claim whose
    app listing is unknown is left alone (unknown is not zero).
    """
    relaunch: list[ClaimView] = []
    for c in claims.by_pool.get(pool.name, ()):
        known, m = claim_machine(c, pool.app, apps)
        if not known:
            out.tally.count(pool.name, "wait", "unknown_data", "not_taken")
            continue
        if m is not None:
            owned.add(m.id)
        _claim(pool, c, m, now, out, relaunch)
    return relaunch


def release_claims_of_destroyed(
    pools: Sequence[PoolPolicy], apps: Mapping[str, AppIndex], claims: ClaimIndex,
    out: PlanBuilder,
) -> None:
    """Claims are judged one at a time: a claim judged before another claim naming the same
    machine had that machine destroyed for it (the job's own options are invalid or refused) saw
    the machine untouched. Once every claim is judged, such a claim is released after that
    Destroy as well, never left holding a machine that is going away."""
    for pool in pools:
        if pool.mode != "per-job":
            continue
        for c in claims.by_pool.get(pool.name, ()):
            if c.job in out.claims:
                continue
            known, m = claim_machine(c, pool.app, apps)
            if known and m is not None and out.touched(m):
                out.claim_action(_requeue(pool, c, "machine_gone", m.id), "requeue")


def settle_ownerless(
    claims: ClaimIndex,
    apps: Mapping[str, AppIndex],
    now: float,
    out: PlanBuilder,
    owned: set[str],
    every_app_known: bool,
) -> None:
    """Claims no per-job pool owns: their machine runs the job to its end (and is owned, so never
    reaped as an orphan); a machine that died, was condemned or never came gives the job back."""
    for c in claims.ownerless:
        known, m = claim_machine(c, None, apps, every_app_known)
        if not known:
            out.tally.count(c.pool, "wait", "unknown_data", "not_taken")
            continue
        if m is not None:
            owned.add(m.id)
            v = verdict(m, OWNERLESS_LIMITS, now)
            if v is None and m.state == "stopped":
                v = Verdict("stopped", False)
            if v is not None:
                out.destroy(None, m, v.reason, v.force)
                out.claim_action(GiveBack(c.pool, c, "pool_gone", m.id), "give_back")
            elif is_gone(m.state):
                out.claim_action(GiveBack(c.pool, c, "pool_gone"), "give_back")
            else:
                out.tally.count(c.pool, "wait", "pool_gone_running", "not_taken")
            continue
        if _pending(c, now):
            out.tally.count(c.pool, "wait", "create_pending", "not_taken")
            if c.create_pending_until is not None:
                out.wake(c.create_pending_until)
            continue
        gone_id = _destroy_unlisted(c, None, None, out)
        out.claim_action(GiveBack(c.pool, c, "pool_gone", gone_id), "give_back")


def _destroy_unlisted(
    c: ClaimView, pool: str | None, app: str | None, out: PlanBuilder
) -> str | None:
    """A claim whose create returned a machine id that no listing shows: destroy that id before
    the job goes back (it may be alive behind a lagging listing). Returns the id, if any."""
    app = c.app or app
    if c.machine_id is None or app is None:
        return None
    ghost = MachineView(
        id=c.machine_id, name=c.machine_name, app=app, pool=pool, state="unlisted",
        job=c.job, queue=c.queue, launch=c.launch,
    )
    out.destroy(pool, ghost, "unlisted", True)
    return c.machine_id


def reap(
    pool: PoolPolicy,
    idx: AppIndex,
    claims: ClaimIndex,
    now: float,
    out: PlanBuilder,
    owned: set[str],
) -> None:
    """Reap the pool's machines that no claim owns: condemned, stopped, lingering after their job
    finished, or orphaned."""
    for m in idx.by_pool.get(pool.name, ()):
        if m.id in owned or out.touched(m):
            continue
        v = verdict(m, pool, now)
        if v is not None:
            out.destroy(pool.name, m, v.reason, v.force)
        elif m.state == "stopped":
            out.destroy(pool.name, m, "stopped", False)
        elif is_gone(m.state):
            continue
        elif m.finished_at is not None:
            reap_finished(out, pool.name, m, m.finished_at, pool.orphan_grace_s, now)
        elif not claims.known(m.queue):
            out.tally.count(pool.name, "reap", "unknown_data", "not_taken")
        else:
            reap_orphan(out, pool.name, m, pool.orphan_grace_s, now, "no_claim")


def _claim(
    pool: PoolPolicy,
    c: ClaimView,
    m: MachineView | None,
    now: float,
    out: PlanBuilder,
    relaunch: list[ClaimView],
) -> None:
    """Plan one claim's action. Claims are judged before any other rule touches a machine, so a
    machine ``out`` already holds is being destroyed for another claim naming it in this plan: this
    claim is released after that Destroy as well (``out.destroy`` refuses the second Destroy)."""
    if c.machine_options_error is not None:
        _dead_letter(pool, c, m, c.machine_options_error, "invalid_options", out)
        return
    if c.create_refused is not None and c.machine_options is not None:
        # The job asked for a machine Fly will not make: asking again changes nothing.
        reason = f"Fly refused this job's machine: {c.create_refused}"
        _dead_letter(pool, c, m, reason, "fly_refused", out)
        return
    if m is None:
        if _pending(c, now):
            out.tally.count(pool.name, "wait", "create_pending", "not_taken")
            if c.create_pending_until is not None:
                out.wake(c.create_pending_until)
            return
        unbound = c.machine_id is None and c.state == "claimed"
        due = relaunch_due(pool, c) if unbound else (
            max(c.claimed_at, c.updated_at or c.claimed_at) + pool.claim_grace_s
        )
        if now < due:
            reason = "backoff" if unbound and c.create_failed_at is not None else "claim_grace"
            out.tally.count(pool.name, "wait", reason, "not_taken")
            out.wake(due)
        elif unbound:
            relaunch.append(c)
        else:
            gone_id = _destroy_unlisted(c, pool.name, pool.app, out)
            out.claim_action(_requeue(pool, c, "machine_gone", gone_id), "requeue")
        return
    if is_idle_slot(m) and not out.touched(m):
        judge_slot_claim(pool, c, m, now, out)  # bound to a warm slot that is not running
        return
    v = verdict(m, pool, now)
    if v is None and m.state == "stopped":
        v = Verdict("stopped", False)
    if v is not None:
        out.destroy(pool.name, m, v.reason, v.force)
        out.claim_action(_requeue(pool, c, v.reason, m.id), "requeue")
    elif out.touched(m):
        out.claim_action(_requeue(pool, c, "machine_gone", m.id), "requeue")
    elif is_gone(m.state):
        out.claim_action(_requeue(pool, c, "machine_gone", None), "requeue")


def _dead_letter(
    pool: PoolPolicy, c: ClaimView, m: MachineView | None, reason: str, cause: str,
    out: PlanBuilder,
) -> None:
    """Dead-letter a claim the job itself dooms, after destroying any machine it has."""
    gone_id = None
    if m is not None and not is_gone(m.state):
        out.destroy(pool.name, m, cause, True)
        gone_id = m.id
    out.claim_action(DeadLetter(pool.name, c, reason, gone_id, cause), "dead_letter")


def _requeue(
    pool: PoolPolicy, c: ClaimView, reason: str, machine: str | None
) -> RequeueOrDeadLetter:
    return RequeueOrDeadLetter(pool.name, c, reason, pool.max_launches, machine)


@dataclass(slots=True)
class QueueDemand:
    """Ready messages a per-job pool may launch for, per readable queue (in the pool's queue
    order), and what is unknown."""

    ready: dict[str, int] = field(default_factory=dict)
    oldest_age: float = 0.0
    unknown: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Ready messages across the pool's readable queues."""
        return sum(self.ready.values())


def launch_demand(
    pool: PoolPolicy, obs: Observation, claims: ClaimIndex, remaining: dict[str, int]
) -> QueueDemand:
    """Ready messages per queue of the pool, from ``remaining`` (shared by pools on one queue).

    A queue whose stats or claims cannot be read gets no launch (unknown is not zero).
    """
    demand = QueueDemand()
    for q in dict.fromkeys(pool.queues):
        view: QueueView | None = obs.queues.get(q)
        if view is None or not claims.known(q):
            demand.unknown.append(q)
            continue
        if q not in remaining:
            remaining[q] = max(0, view.ready)
        demand.ready[q] = remaining[q]
        if remaining[q] > 0 and view.oldest_ready_age_s is not None:
            demand.oldest_age = max(demand.oldest_age, view.oldest_ready_age_s)
    return demand
