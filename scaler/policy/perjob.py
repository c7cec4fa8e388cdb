"""Per-job pools: each claim keeps exactly one machine, or its job goes back or to the dead letters.

For each claim, its machine is found by id (once the create returned), else by deterministic name,
else by (job, launch) metadata. Then:

- invalid per-job machine options -> DeadLetter (after destroying any machine it has);
- machine destroyed, destroying, launch_failed -> RequeueOrDeadLetter;
- machine condemned by the reaper (stopped, failed, wedged, never booted, over max runtime) ->
  Destroy + RequeueOrDeadLetter. A boot timeout counts as a failed launch on purpose: an image that
  never boots ends in the dead letters after ``max_launches`` instead of looping forever;
- no machine visible past ``claim_grace_s``: if no create ever returned (no machine id, still
  "claimed") -> Relaunch under the same name (idempotent); otherwise -> RequeueOrDeadLetter.

A machine of the pool that no claim owns is an orphan once claims are known: first MarkOrphan, then
Destroy after ``orphan_grace_s``. A started machine whose claim just vanished (its job acked) is
usually exiting by itself; marking it is harmless and it is only destroyed if it lingers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaler.policy.builder import PlanBuilder
from scaler.policy.index import AppIndex, ClaimIndex
from scaler.policy.reaper import Verdict, reap_orphan, verdict
from scaler.policy.states import is_gone
from scaler.policy.types import (
    ClaimView,
    DeadLetter,
    MachineView,
    Observation,
    PoolPolicy,
    QueueView,
    RequeueOrDeadLetter,
)

__all__ = ["QueueDemand", "find_machine", "launch_demand", "reap", "release_claims"]


def find_machine(c: ClaimView, idx: AppIndex) -> MachineView | None:
    """The machine listed for a claim, if any."""
    if c.machine_id is not None:
        return idx.by_id.get(c.machine_id)
    m = idx.by_name.get(c.machine_name)
    if m is not None:
        return m
    return idx.by_job.get((c.job, c.launch))


def release_claims(
    pool: PoolPolicy,
    idx: AppIndex,
    claims: ClaimIndex,
    now: float,
    out: PlanBuilder,
    owned: set[str],
) -> list[ClaimView]:
    """Plan the claim releases of one per-job pool whose app listing is known.

    Adds the ids of the machines its claims own to ``owned`` (no other rule may reap those), and
    returns the claims that need a Relaunch, oldest first (the caller checks caps and budget).
    """
    relaunch: list[ClaimView] = []
    for c in claims.by_pool.get(pool.name, ()):
        m = find_machine(c, idx)
        if m is not None:
            owned.add(m.id)
        _claim(pool, c, m, now, out, relaunch)
    return relaunch


def reap(
    pool: PoolPolicy,
    idx: AppIndex,
    claims: ClaimIndex,
    now: float,
    out: PlanBuilder,
    owned: set[str],
) -> None:
    """Reap the pool's machines that no claim owns: condemned, stopped, or orphaned."""
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
        gone_id = None
        if m is not None and not is_gone(m.state):
            out.destroy(pool.name, m, "invalid_options", True)
            gone_id = m.id
        out.claim_action(DeadLetter(pool.name, c, c.machine_options_error, gone_id), "dead_letter")
        return
    if m is None:
        since = max(c.claimed_at, c.updated_at or c.claimed_at)
        if now - since < pool.claim_grace_s:
            out.tally.count(pool.name, "wait", "claim_grace", "not_taken")
        elif c.machine_id is None and c.state == "claimed":
            relaunch.append(c)
        else:
            out.claim_action(_requeue(pool, c, "machine_gone", None), "requeue")
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
