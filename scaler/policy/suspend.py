"""The suspended tier of worker pools (``warm_suspended``): which idle workers to suspend, and the
order warm machines are started in.

A worker of such a pool does not exit when idle: it pauses (takes no message) and says so in Redis
(``MachineView.idle_since``), then waits a while before it exits as any idle worker does. While it
waits, the planner suspends it if the pool has fewer than ``warm_suspended`` suspended machines and
does not need it now (its desired count is below its live count). A suspended worker keeps its
memory, and a start resumes it in a few hundred ms on Fly: suspended machines are started first,
then stopped ones (a fresh boot), and only then are machines created. Extra suspended machines
(``warm_suspended`` lowered) are destroyed.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaler.policy.builder import PlanBuilder
from scaler.policy.types import MachineView, PoolPolicy

__all__ = ["plan_suspends", "start_order"]


def start_order(m: MachineView) -> tuple[int, float, str]:
    """Warm machines in the order they are started: suspended before stopped, then the most
    recently used first."""
    return (0 if m.state == "suspended" else 1, -m.updated_at, m.id)


def plan_suspends(
    pool: PoolPolicy,
    started: Sequence[MachineView],
    suspended: int,
    desired: int,
    live: int,
    out: PlanBuilder,
) -> int:
    """Plan Suspends of idle workers among ``started`` (the pool's started machines): at most
    ``warm_suspended - suspended`` of them and at most ``live - desired`` (the ones not needed),
    the longest idle first. Returns how many were planned."""
    room = min(pool.warm_suspended - suspended, live - desired)
    if room <= 0:
        return 0
    idle = sorted(
        (m for m in started if m.state == "started" and m.idle_since is not None
         and not out.touched(m)),
        key=lambda m: (m.idle_since or 0.0, m.id),
    )
    planned = 0
    for m in idle[:room]:
        if out.suspend(pool.name, m):
            planned += 1
    return planned
