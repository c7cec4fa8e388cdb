"""Which machines must go, and why: failed, wedged, never booted, over their runtime, orphaned, or
still there long after their job finished.

These rules read only the machine listing, so they are safe whenever that listing is known.
Destroying a machine that still holds a per-job claim is paired with releasing that claim
(see :mod:`scaler.policy.perjob`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scaler.policy.builder import PlanBuilder
from scaler.policy.states import PRE_START_STATES, RESTING_STATES, is_gone, is_wedged
from scaler.policy.types import DEFAULT_ORPHAN_GRACE_S, AwaitExit, MachineView, PoolPolicy

__all__ = ["Verdict", "orphan_grace", "reap_finished", "reap_orphan", "verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A machine must be destroyed: ``reason``, and whether it must be killed first."""

    reason: str
    force: bool


def verdict(m: MachineView, pool: PoolPolicy, now: float) -> Verdict | None:
    """The rule that condemns ``m``, if any (stopped machines are the caller's business).

    Boot time runs from ``created_at`` for a machine that never started, else from ``updated_at``
    (a warm worker or a warm slot being started again). Runtime runs from ``started_at``.
    """
    if m.state == "failed":
        return Verdict("failed", True)
    if is_wedged(m, now):
        return Verdict("stuck", True)
    if is_gone(m.state) or m.state in RESTING_STATES:
        return None
    if m.state in PRE_START_STATES:
        # A warm slot is started again and again: its boot runs from its last state change.
        fresh = m.started_at is None and m.slot is None
        since = m.created_at if fresh else m.updated_at
        if now - since > pool.boot_timeout_s:
            return Verdict("boot_timeout", True)
        return None
    if (
        pool.max_runtime_s is not None
        and m.started_at is not None
        and now - m.started_at > pool.max_runtime_s
    ):
        return Verdict("max_runtime", True)
    return None


def orphan_grace(app: str, pools: Sequence[PoolPolicy]) -> float:
    """Grace for a machine of ``app`` whose pool is unknown: the longest of the app's pools."""
    graces = [p.orphan_grace_s for p in pools if app in p.fly_apps]
    return max(graces) if graces else DEFAULT_ORPHAN_GRACE_S


def reap_orphan(
    out: PlanBuilder, pool: str | None, m: MachineView, grace: float, now: float, mark_reason: str
) -> None:
    """Plan an orphan's next step: mark it (``mark_reason``), destroy it once marked for ``grace``
    seconds, or count it as waiting."""
    if m.orphan_marked_at is None:
        out.mark_orphan(pool, m, mark_reason)
    elif now - m.orphan_marked_at >= grace:
        out.destroy(pool, m, "orphan", True)
    else:
        out.tally.count(pool, "reap", "orphan_grace", "not_taken")


def reap_finished(
    out: PlanBuilder, pool: str | None, m: MachineView, finished_at: float, grace: float,
    now: float,
) -> None:
    """A machine whose job finished at ``finished_at`` exits by itself: it is neither marked nor
    counted as an orphan. Only one still there ``grace`` seconds later is destroyed, with its own
    reason; until then it stays live for the caps, as any listed machine, and its exit is
    awaited (:class:`~scaler.policy.types.AwaitExit`): Fly's word that it stopped frees its slot
    before a listing shows it."""
    due = finished_at + grace
    if now >= due:
        out.destroy(pool, m, "finished_lingering", True)
    else:
        out.add(AwaitExit(pool, m))
        out.wake(due)
