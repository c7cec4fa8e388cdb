"""A worker pool's machines on a fake clock, driven tick by tick by the real, pure planner.

:func:`simulate` builds an :class:`~scaler.policy.types.Observation` every tick from a small model
of Fly machines and of the pool's workers, asks :func:`scaler.policy.plan` what to do, and applies
the plan's effects to the model: a Create adds machines that boot after ``boot_s``, a Start boots a
stopped machine after ``start_s``, a Destroy removes one. Workers behave as ``workers.runner
--drain`` does: a started worker with nothing to do exits after the pool's idle timeout (stopped and
kept when the pool keeps warm machines, else destroyed by ``auto_destroy``). Create tokens refill at
Fly's rate (1 per second, burst 3). Nothing sleeps: an hour takes milliseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scaler.policy import (
    Caps,
    Create,
    Destroy,
    MachineView,
    Observation,
    PoolPolicy,
    QueueView,
    Start,
    plan,
)

__all__ = ["FleetOutcome", "simulate", "square_wave"]

Demand = Callable[[float], int]


@dataclass
class _Machine:
    id: str
    state: str
    created_at: float
    updated_at: float
    ready_at: float | None = None
    started_at: float | None = None
    idle_since: float | None = None


@dataclass(frozen=True)
class FleetOutcome:
    """What the planner did to the pool over the simulated span.

    Attributes:
        seconds: the simulated span.
        actions: planner actions by kind (``create`` counts machines, ``start``, ``destroy``).
        exits: workers that exited idle (scale-downs the planner caused by scaling up earlier).
        machines_created: distinct machines ever created.
        shortest_run_s: the shortest started-to-exit run of any worker (``inf`` if none ended).
        peak_live: the most machines live (booting or started) at a tick.
        demand_flips: how many times the demand crossed the threshold.
        started: per tick, (seconds since the start, workers started then).
    """

    seconds: float
    actions: Counter[str]
    exits: int
    machines_created: int
    shortest_run_s: float
    peak_live: int
    demand_flips: int
    started: list[tuple[float, int]]

    @property
    def total_actions(self) -> int:
        """Creates + starts + destroys."""
        return sum(self.actions.values())

    @property
    def actions_per_hour(self) -> float:
        """Planner actions per simulated hour."""
        return self.total_actions * 3600.0 / self.seconds if self.seconds else 0.0


def square_wave(
    low: int, high: int, half_periods: Iterable[float], span: float
) -> tuple[Demand, int]:
    """Demand alternating ``low``, ``high``, ``low``... holding each level for the next half
    period, over ``span`` seconds; returns the demand function and the number of level changes
    within the span."""
    edges: list[float] = []
    t = 0.0
    for h in half_periods:
        t += h
        if t >= span:
            break
        edges.append(t)

    def demand(now: float) -> int:
        flips = 0
        for e in edges:
            if now < e:
                break
            flips += 1
        return high if flips % 2 else low

    return demand, len(edges)


def _view(m: _Machine, pool: PoolPolicy) -> MachineView:
    return MachineView(
        id=m.id, name=m.id, app=pool.app, pool=pool.name, state=m.state,
        created_at=m.created_at, updated_at=m.updated_at, started_at=m.started_at,
    )


def simulate(
    pool: PoolPolicy,
    demand: Demand,
    *,
    seconds: float,
    tick_s: float = 5.0,
    boot_s: float = 3.0,
    start_s: float = 1.0,
    start_at: float = 1_700_000_000.0,
    flips: int = 0,
) -> FleetOutcome:
    """Run the planner on ``pool`` for ``seconds`` of fake time, one tick every ``tick_s``."""
    caps = Caps(global_max=max(100, pool.max_machines))
    machines: dict[str, _Machine] = {}
    actions: Counter[str] = Counter()
    runs: list[float] = []
    exits = created = peak = 0
    trace: list[tuple[float, int]] = []
    tokens, token_at = 3.0, start_at
    t = start_at
    end = start_at + seconds
    while t < end:
        for m in machines.values():  # boots that finished
            if m.ready_at is not None and m.ready_at <= t:
                m.state, m.started_at, m.updated_at, m.ready_at = "started", m.ready_at, t, None
        work = max(0, demand(t - start_at))
        busy = math.ceil(work / pool.jobs_per_machine)
        running = sorted((m for m in machines.values() if m.state == "started"),
                         key=lambda m: (m.started_at or 0.0, m.id))
        for i, m in enumerate(running):
            if i < busy:
                m.idle_since = None
                continue
            if m.idle_since is None:
                m.idle_since = t
            if t - m.idle_since >= pool.idle_timeout_s and (
                t - (m.started_at or t) >= pool.min_lifetime_s
            ):  # as workers.runner --drain: idle long enough, and alive for its minimum lifetime
                exits += 1
                runs.append(t - (m.started_at or t))
                if pool.warm_machines > 0:
                    m.state, m.updated_at, m.idle_since = "stopped", t, None
                else:
                    del machines[m.id]
        started = sum(m.state == "started" for m in machines.values())
        trace.append((t - start_at, started))
        capacity = started * pool.jobs_per_machine
        queue = QueueView(pool.queues[0], ready=max(0, work - capacity),
                          in_flight=min(work, capacity))
        tokens = min(3.0, tokens + (t - token_at))
        token_at = t
        obs = Observation(
            now=t,
            queues={pool.queues[0]: queue},
            machines_by_app={pool.app: tuple(_view(m, pool) for m in machines.values())},
            create_budget={pool.app: tokens},
            metric_values={pool.name: float(work)},
        )
        p = plan(obs, [pool], caps)
        for c in p.of_type(Create):
            for _ in range(c.count):
                created += 1
                mid = f"m{created}"
                machines[mid] = _Machine(mid, "created", t, t, ready_at=t + boot_s)
                tokens -= 1
            actions["create"] += c.count
        for s in p.of_type(Start):
            m = machines[s.machine.id]
            m.state, m.updated_at, m.ready_at = "starting", t, t + start_s
            actions["start"] += 1
        for d in p.of_type(Destroy):
            machines.pop(d.machine.id, None)
            actions["destroy"] += 1
        peak = max(peak, sum(m.state != "stopped" for m in machines.values()))
        t += tick_s
    return FleetOutcome(
        seconds=seconds, actions=actions, exits=exits, machines_created=created,
        shortest_run_s=min(runs, default=math.inf), peak_live=peak, demand_flips=flips,
        started=trace,
    )
