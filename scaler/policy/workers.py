"""Worker pools: how many dramatiq workers a pool wants, and its machine housekeeping.

``desired = clamp(min_machines, max_machines, signal)``:

- depth: ``ceil((ready + in_flight + delayed_due) / jobs_per_machine)``;
- latency: while the oldest ready message is older than ``target_latency_s``, grow in proportion
  (``max(live + 1, ceil(live * age / target))``); otherwise hold; at least one worker while any
  work exists; zero only when ready + in_flight + delayed_due is zero;
- prometheus: ``ceil(value / target_per_machine)``.

For depth and prometheus, a scale-up from a running fleet waits until the load per live machine is
more than ``scale_tolerance`` above its target (Kubernetes' HPA tolerance): 11 jobs on 2 machines of
5 is 10 % over and holds; 30 jobs scales to 6 at once. From zero, any work starts a machine.

When an input is unknown (a queue unreadable, or the metric) the pool holds: desired is its live
count (within ``min_machines`` and ``max_machines``), and its stopped machines are kept. The planner
never stops a started worker to scale down (workers exit by themselves after ``idle_timeout_s``); it
only stops launching and destroys stopped machines beyond ``warm_machines``. With
``warm_suspended``, idle workers are suspended instead (:mod:`~scaler.policy.suspend`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scaler.policy.builder import PlanBuilder
from scaler.policy.index import AppIndex
from scaler.policy.reaper import verdict
from scaler.policy.states import RESTING_STATES
from scaler.policy.suspend import start_order
from scaler.policy.types import MachineView, Observation, PoolPolicy

__all__ = ["Signal", "desired_workers", "reap_workers", "warm_order"]


@dataclass(frozen=True, slots=True)
class Signal:
    """A worker pool's desired count and the numbers behind it; ``known`` is False when holding."""

    desired: int
    known: bool
    inputs: Mapping[str, float | int | str]


def desired_workers(pool: PoolPolicy, obs: Observation, live: int) -> Signal:
    """The live worker count the pool wants, from its signal."""
    ready = in_flight = due = 0
    oldest: float | None = None
    unknown = False
    for q in dict.fromkeys(pool.queues):
        view = obs.queues.get(q)
        if view is None:
            unknown = True
            continue
        ready += max(0, view.ready)
        in_flight += max(0, view.in_flight)
        due += max(0, view.delayed_due)
        if view.oldest_ready_age_s is not None:
            oldest = max(oldest or 0.0, view.oldest_ready_age_s)
    work = ready + in_flight + due
    inputs: dict[str, float | int | str] = {
        "scale_on": pool.scale_on,
        "ready": ready,
        "in_flight": in_flight,
        "delayed_due": due,
        "live": live,
    }
    raw: int | None
    load: float | None = None  # demand in units of one machine's target
    if unknown:
        raw = None
    elif pool.scale_on == "depth":
        load = work / pool.jobs_per_machine
        raw = math.ceil(load)
    elif pool.scale_on == "latency":
        inputs["oldest_ready_age_s"] = oldest if oldest is not None else "unknown"
        inputs["target_latency_s"] = pool.target_latency_s
        if work == 0:
            raw = 0
        elif oldest is not None and oldest > pool.target_latency_s:
            raw = max(live + 1, math.ceil(live * oldest / pool.target_latency_s))
        else:
            raw = max(live, 1)
    else:
        value = obs.metric_values.get(pool.name)
        inputs["metric"] = value if value is not None else "unknown"
        inputs["target_per_machine"] = pool.target_per_machine
        if value is not None:
            load = max(0.0, value) / pool.target_per_machine
        raw = None if load is None else math.ceil(load)
    if raw is not None and load is not None and live > 0 and raw > live and (
        load <= live * (1.0 + pool.scale_tolerance)
    ):
        inputs["held_within_tolerance"] = pool.scale_tolerance
        raw = live
    if raw is None:
        held = min(pool.max_machines, max(pool.min_machines, live))
        return Signal(held, False, inputs)
    return Signal(min(pool.max_machines, max(pool.min_machines, raw)), True, inputs)


def warm_order(m: MachineView) -> tuple[int, float, str]:
    """Warm workers in the order they are started and kept: suspended before stopped (see
    :func:`scaler.policy.suspend.start_order`), most recently used first."""
    return start_order(m)


def reap_workers(
    pool: PoolPolicy, idx: AppIndex, now: float, out: PlanBuilder, owned: set[str]
) -> list[MachineView]:
    """Destroy condemned workers; return the stopped and suspended ones (warm candidates), best
    first.

    Machines in ``owned`` (bound to a per-job claim) are left to the claim's rules.
    """
    stopped: list[MachineView] = []
    for m in idx.by_pool.get(pool.name, ()):
        if m.id in owned or out.touched(m):
            continue
        v = verdict(m, pool, now)
        if v is not None:
            out.destroy(pool.name, m, v.reason, v.force)
        elif m.state in RESTING_STATES:
            stopped.append(m)
    stopped.sort(key=warm_order)
    return stopped
