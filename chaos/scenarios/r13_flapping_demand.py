"""R13 flapping demand: a worker pool's demand hovers around a scaling threshold for an hour.

The pure planner is driven tick by tick (every 5 s) on a fake clock against a model of the pool's
machines (:mod:`chaos.fleet`): the queue holds 10 jobs, then 11 (or, in a second shape, 12), for 5
jobs per machine, switching at random every 40-160 s, so the wanted fleet flips between 2 and 3
machines dozens of times an hour. Workers exit after an idle timeout of 60 s when the extra
machine is not needed, once they have run the pool's minimum lifetime (default 10 minutes). The
two shapes exceed the threshold by 10 % and by 20 %: a dead band alone (a tolerance around the
target) absorbs the first; only a cooldown, a hysteresis wide enough or a minimum lifetime
absorbs both.

A damped scaler (a cooldown, hysteresis or a minimum lifetime) keeps the third machine, or at least
does not buy a new one on every swing: the scenario allows at most 6 scale-ups (creates or starts
of warm machines) and destroys per hour, one per 10 minutes, beyond the creates that first bring
the pool from zero to the low demand. Damping must not slow real demand:
when the queue then jumps to 30 jobs and stays there, the pool must reach 6 started machines within
3 ticks (plus boot). Two pools are tried: without warm machines (every scale-up is a create) and
with one warm machine (a start).
"""

from __future__ import annotations

import argparse
import math
import random

from chaos.fleet import FleetOutcome, simulate, square_wave
from chaos.harness import ChaosContext
from chaos.intree import child_main, here_or_in_tree
from chaos.result import ScenarioResult
from scaler.policy import PoolPolicy

ID = "R13"
TITLE = "flapping demand (planner, fake clock)"

HOUR = 3600.0
TICK_S = 5.0
JOBS_PER_MACHINE = 5
LOW, SURGE = 10, 30
HIGHS = (11, 12)
MAX_ACTIONS_PER_HOUR = 6
RAMP = math.ceil(LOW / JOBS_PER_MACHINE)  # creates that bring the pool from zero to the low demand
FOLLOW_TICKS = 3


def _pool(warm: int) -> PoolPolicy:
    return PoolPolicy(
        name="workers", mode="worker", app="app", queues=("work",), max_machines=10,
        jobs_per_machine=JOBS_PER_MACHINE, idle_timeout_s=60.0, warm_machines=warm,
    )


def _flapping(pool: PoolPolicy, high: int, seed: int) -> FleetOutcome:
    rng = random.Random(seed)
    demand, flips = square_wave(LOW, high, (rng.uniform(40, 160) for _ in range(1000)), HOUR)
    return simulate(pool, demand, seconds=HOUR, tick_s=TICK_S, flips=flips)


def _follow_seconds(pool: PoolPolicy) -> float:
    """Seconds from a sustained surge to the pool running the machines it needs (inf: never)."""
    surge_at = 600.0

    def demand(t: float) -> int:
        return SURGE if t >= surge_at else LOW

    out = simulate(pool, demand, seconds=surge_at + 300.0, tick_s=TICK_S)
    need = math.ceil(SURGE / JOBS_PER_MACHINE)
    return next((t - surge_at for t, n in out.started if t >= surge_at and n >= need), math.inf)


def evaluate(quick: bool) -> ScenarioResult:
    """Run every case on the planner in this process."""
    result = ScenarioResult(ID, TITLE)
    seeds = [13] if quick else [13, 14, 15, 16, 17]
    worst = 0.0
    for warm, label in ((0, "no warm machines"), (1, "one warm machine")):
        pool = _pool(warm)
        for high, seed in ((h, s) for h in HIGHS for s in seeds):
            out = _flapping(pool, high, seed)
            per_hour = out.actions_per_hour - RAMP * 3600.0 / HOUR
            worst = max(worst, per_hour)
            key = f"{label}, {LOW}<->{high} jobs, seed {seed}"
            result.details[key] = {
                "scale_actions_per_hour": round(per_hour, 1), "actions": dict(out.actions),
                "worker_exits": out.exits, "demand_flips": out.demand_flips,
                "shortest_worker_run_s": out.shortest_run_s, "peak_live": out.peak_live,
            }
            result.check(
                per_hour <= MAX_ACTIONS_PER_HOUR,
                f"bounded scaling ({label}): {per_hour:.0f} scale actions in one hour "
                f"({dict(out.actions)}; {out.exits} idle exits) for a demand that flipped "
                f"{out.demand_flips} times between {LOW} and {high} jobs ({JOBS_PER_MACHINE} per "
                f"machine), beyond the {RAMP} that start the pool; allowed "
                f"{MAX_ACTIONS_PER_HOUR}/h: no cooldown, hysteresis or minimum "
                "lifetime absorbs the swings, each one above the threshold buys a machine that "
                "then idles out",
            )
        follow = _follow_seconds(pool)
        result.details[f"{label}: seconds to follow a surge"] = follow
        budget = FOLLOW_TICKS * TICK_S + 3.0  # ticks plus one boot
        result.check(
            follow <= budget,
            f"real demand followed ({label}): {follow:.0f} s to run the machines a sustained "
            f"surge needs, allowed {budget:.0f} s",
        )
    result.details["max_scale_actions_per_hour"] = round(worst, 1)
    result.details["allowed_per_hour"] = MAX_ACTIONS_PER_HOUR
    result.peak_live = max(
        int(v["peak_live"]) for v in result.details.values()
        if isinstance(v, dict) and "peak_live" in v
    )
    result.cap = 10
    return result


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario (the planner of the tree under test)."""
    return here_or_in_tree(ctx, __name__, [], lambda: evaluate(ctx.quick), sid=ID, title=TITLE)


def _child(args: argparse.Namespace) -> ScenarioResult:
    return evaluate(bool(args.quick))


if __name__ == "__main__":
    raise SystemExit(child_main(_child))
