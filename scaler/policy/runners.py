"""GitHub runner pools: which idle runners must go. Pure: the observation in, actions out.

GitHub gives a queued job to *any* idle runner whose labels match, so the runners of a pool are
counted, not bound to jobs. A runner pool is a per-job pool (each claim one runner machine, each
message one queued job); on top of the per-job rules, after they have judged every claim:

- **Surplus.** The pool's idle runners (a claim whose runner started no job) plus its messages
  still waiting in the queue stand for jobs; ``github_queued`` counts the jobs GitHub still has
  queued for the pool. When the first exceed the second (a job was cancelled or ran on another
  runner after its runner was launched), that many idle runners are withdrawn: their machine
  destroyed, their registration removed (act), their message dropped (:class:`Withdraw`). Those
  not yet started go first (no job can reach a runner that is not online); a started one only
  after :data:`SURPLUS_MIN_IDLE_S` online, oldest first: a runner that just came online is the
  one GitHub is handing a job to right now, and the job's webhook may still be on its way.
- **Launches** are capped by :func:`cap_runner_demand`: no more than the jobs GitHub has queued
  beyond the runners not busy.
- **Idle timeout.** A runner started ``runner_idle_timeout_s`` ago that GitHub gave no job (it
  never came online, or its labels match nothing queued) is destroyed and its message given back
  (:class:`RequeueOrDeadLetter`, reason ``idle_timeout``): if its job is still queued another
  runner is launched for it, up to ``max_launches``.

A busy runner is never touched here: its job ends it (the claim ends with the ``completed``
event and the machine exits; one still there after ``orphan_grace`` is destroyed as
``finished_lingering``). Unknown counts (``None``) withdraw nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from scaler.policy.builder import PlanBuilder
from scaler.policy.index import AppIndex, ClaimIndex, claim_machine
from scaler.policy.perjob import QueueDemand
from scaler.policy.states import is_gone
from scaler.policy.types import (
    ClaimView,
    MachineView,
    Observation,
    PoolPolicy,
    RequeueOrDeadLetter,
    Withdraw,
)

__all__ = ["SURPLUS_MIN_IDLE_S", "cap_runner_demand", "plan_runners"]

SURPLUS_MIN_IDLE_S = 30.0
"""How long a started runner is online before it may be withdrawn as surplus."""


def _idle_claims(
    pool: PoolPolicy, apps: Mapping[str, AppIndex], claims: ClaimIndex, obs: Observation,
    out: PlanBuilder,
) -> list[tuple[ClaimView, MachineView]]:
    """The pool's claims whose runner machine is listed, alive, untouched by this plan and not
    busy. Claims still waiting for their machine are the per-job rules' business."""
    idle = []
    for c in claims.by_pool.get(pool.name, ()):
        if c.job in out.claims:
            continue
        known, m = claim_machine(c, pool.app, apps)
        if not known or m is None or is_gone(m.state) or out.touched(m):
            continue
        runner = obs.runners.get(c.machine_name)
        if runner is not None and runner.busy:
            continue
        idle.append((c, m))
    return idle


def plan_runners(
    pool: PoolPolicy, apps: Mapping[str, AppIndex], claims: ClaimIndex, obs: Observation,
    out: PlanBuilder,
) -> None:
    """Withdraw surplus runners and time out idle ones (see the module docstring)."""
    timeout = pool.runner_idle_timeout_s
    if timeout is None:
        return
    idle = _idle_claims(pool, apps, claims, obs, out)
    queued = obs.github_queued.get(pool.name)
    views = [obs.queues.get(q) for q in pool.queues]
    if queued is None or any(v is None for v in views):
        if idle:
            out.tally.count(pool.name, "reap", "unknown_data", "not_taken")
        return
    waiting = sum(v.ready for v in views if v is not None)
    surplus = len(idle) + waiting - queued
    now = obs.now

    def online_since(item: tuple[ClaimView, MachineView]) -> float:
        started = item[1].started_at
        return -1.0 if started is None else started

    for c, m in sorted(idle, key=online_since):
        if surplus <= 0:
            break
        if m.started_at is not None and now - m.started_at < SURPLUS_MIN_IDLE_S:
            out.tally.count(pool.name, "wait", "runner_just_online", "not_taken")
            out.wake(m.started_at + SURPLUS_MIN_IDLE_S)
            continue
        if out.destroy(pool.name, m, "surplus", True):
            out.claim_action(Withdraw(pool.name, c, "surplus", m.id), "withdraw")
            surplus -= 1
    for c, m in idle:
        if out.touched(m) or m.started_at is None:
            continue
        due = m.started_at + timeout
        if now < due:
            out.wake(due)
            continue
        if out.destroy(pool.name, m, "idle_timeout", True):
            out.claim_action(
                RequeueOrDeadLetter(pool.name, c, "idle_timeout", pool.max_launches, m.id),
                "requeue",
            )


def cap_runner_demand(
    pool: PoolPolicy, demand: QueueDemand, obs: Observation, claims: ClaimIndex, out: PlanBuilder,
) -> None:
    """Launch no more runners than GitHub has jobs queued for the pool beyond the runners already
    there and not busy (pending creates included): a waiting message beyond that stands for a job
    that another runner took or that ended, and a runner launched for it would only be withdrawn.
    The waiting messages beyond are held back (withdrawn as their jobs end); an unknown count
    holds nothing back."""
    queued = obs.github_queued.get(pool.name)
    if pool.runner_idle_timeout_s is None or queued is None:
        return
    unbusy = sum(1 for c in claims.by_pool.get(pool.name, ())
                 if (r := obs.runners.get(c.machine_name)) is None or not r.busy)
    room = max(0, queued - unbusy)
    for q in list(demand.ready):
        held = max(0, demand.ready[q] - room)
        if held:
            out.tally.count(pool.name, "launch", "runner_surplus", "not_taken", held)
        demand.ready[q] -= held
        room -= demand.ready[q]
