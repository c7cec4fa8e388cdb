"""The measures every scenario shares, read from the local API's admin side and from Redis, and the
checks that turn them into a verdict naming the broken invariant."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chaos.harness import ChaosContext
from chaos.jobs import Job, side_effects
from chaos.localapi import LocalAPI
from chaos.result import ScenarioResult
from scaler.loop.machines import META_JOB, META_LAUNCH, META_SCALER

__all__ = [
    "GONE",
    "all_ran",
    "all_started",
    "check_jobs",
    "check_machines",
    "conclude",
    "dead_letters",
    "live",
    "machines_per_job",
    "machines_per_launch",
    "metadata",
    "ours",
    "wait_for",
    "wait_while_progress",
]

GONE = frozenset({"destroying", "destroyed"})


def metadata(machine: dict[str, Any]) -> dict[str, Any]:
    """A listed machine's ``config.metadata`` (``{}`` when absent)."""
    md = (machine.get("config") or {}).get("metadata")
    return md if isinstance(md, dict) else {}


def ours(machines: Iterable[dict[str, Any]], scaler_id: str = "fly-scaler") -> list[dict[str, Any]]:
    """The machines carrying our scaler id."""
    return [m for m in machines if metadata(m).get(META_SCALER) == scaler_id]


def live(machines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The machines not destroyed nor being destroyed."""
    return [m for m in machines if m.get("state") not in GONE]


def machines_per_job(machines: Iterable[dict[str, Any]]) -> Counter[str]:
    """Machines (destroyed ones included) per job (``fly_scaler_job``: redis_message_id)."""
    return Counter(str(metadata(m)[META_JOB]) for m in machines if metadata(m).get(META_JOB))


def machines_per_launch(machines: Iterable[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Machines per (job, launch): more than one is a duplicate create."""
    return Counter((str(metadata(m)[META_JOB]), str(metadata(m).get(META_LAUNCH)))
                   for m in machines if metadata(m).get(META_JOB))


def wait_for(check: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until truthy or ``timeout`` seconds pass; whether it became true (a
    scenario turns False into a FAIL naming what did not happen, not into an exception)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_while_progress(
    progress: Callable[[], tuple[bool, int]], stall: float, timeout: float, interval: float = 0.1,
) -> bool:
    """Poll ``progress`` (done, units done so far) until done, until no unit was done for
    ``stall`` seconds, or until ``timeout``; whether it got done. For large batches whose pace is
    the host's (CPU for the machines' processes), not the scaler's: a stuck scaler stalls, a busy
    host only goes slower."""
    start = last = time.monotonic()
    seen = -1
    while True:
        done, units = progress()
        now = time.monotonic()
        if done:
            return True
        if units != seen:
            seen, last = units, now
        if now - last >= stall or now - start >= timeout:
            return False
        time.sleep(interval)


def check_jobs(
    result: ScenarioResult, runs: Counter[str], jobs: Sequence[Job], *,
    may_be_dead: Iterable[str] = (),
) -> None:
    """Invariants 1 and 2 by side effect: each job ran exactly once; a job in ``may_be_dead``
    (dead-lettered on purpose) may have run 0 times, never twice."""
    excused = set(may_be_dead)
    twice = sorted(j.name for j in jobs if runs[j.name] > 1)
    lost = sorted(j.name for j in jobs if runs[j.name] == 0 and j.name not in excused)
    result.ran_exactly_once = not twice and not lost
    result.check(not twice, f"invariant 1 (one run per job): ran more than once: {twice} "
                            f"({[runs[j] for j in twice]} times)")
    result.check(not lost, f"invariant 2 (no lost job): never ran: {lost}")


def check_machines(
    result: ScenarioResult, machines: Sequence[dict[str, Any]], *, jobs: Sequence[Job],
    leaked: Sequence[dict[str, Any]], max_per_job: int = 1,
) -> None:
    """Invariants 1 and 3 by listing: at most ``max_per_job`` machines per job and one per
    (job, launch); none of ours left live after the drain."""
    per_job = machines_per_job(machines)
    names = {j.redis_message_id: j.name for j in jobs}
    result.max_machines_per_job = max(per_job.values(), default=0)
    over = {names.get(k, k): n for k, n in per_job.items() if n > max_per_job}
    result.check(not over, f"invariant 1 (one machine per job): machines per job {over} "
                           f"(allowed {max_per_job})")
    dup = {f"{names.get(j, j)}#{launch}": n
           for (j, launch), n in machines_per_launch(machines).items() if n > 1}
    result.check(not dup, f"invariant 1 (one machine per launch): {dup}")
    result.leaked = len(leaked)
    result.check(not leaked, "invariant 3 (no leaked machine): still live after the drain: "
                             + ", ".join(f"{m.get('name')} ({m.get('state')})" for m in leaked))


def live_interval(machine: dict[str, Any]) -> tuple[float, float] | None:
    """When the machine was live by its events (API clock, s): from its creation to its first
    exit, stop or destruction (``inf`` if none yet)."""
    events = machine.get("events") or ()
    born = [float(e["timestamp"]) for e in events if e.get("type") == "launch"]
    ends = [float(e["timestamp"]) for e in events
            if e.get("status") in ("stopping", "stopped", "destroying", "destroyed", "failed")]
    if not born:
        return None
    return min(born) / 1000.0, (min(ends) / 1000.0 if ends else float("inf"))


def crowd(machines: Iterable[dict[str, Any]]) -> tuple[int, list[str]]:
    """The most machines live at once by their events, and which (a cap overshoot's suspects).
    Events are the API's own record, so this needs no sampling."""
    spans = [(span, str(m.get("name"))) for m in machines if (span := live_interval(m))]
    best: tuple[int, list[str]] = (0, [])
    for (start, _), _name in spans:
        here = [n for (a, b), n in spans if a <= start < b]
        if len(here) > best[0]:
            best = (len(here), here)
    return best


def all_ran(ctx: ChaosContext, jobs: Sequence[Job], *, key: str | None = None) -> bool:
    """Whether every job's side effect happened at least once."""
    runs = side_effects(ctx.redis, key or ctx.key)
    return all(runs[j.name] for j in jobs)


def all_started(ctx: ChaosContext, jobs: Sequence[Job], *, key: str | None = None) -> bool:
    """Whether every job began at least once on a machine (the actors mark each attempt)."""
    began = side_effects(ctx.redis, f"{key or ctx.key}:start")
    return all(began[j.name] for j in jobs)


def dead_letters(ctx: ChaosContext, queue: str | None = None) -> int:
    """Messages in the queue's dead letters (``{ns}:{q}.XQ``)."""
    return int(ctx.redis.zcard(f"{ctx.namespace}:{queue or ctx.queue}.XQ"))


def conclude(
    result: ScenarioResult, ctx: ChaosContext, api: LocalAPI, app: str, jobs: Sequence[Job], *,
    cap: int | None, drain_s: float = 20.0, may_be_dead: Iterable[str] = (),
    max_per_job: int = 1,
) -> list[dict[str, Any]]:
    """The common end of a scenario: wait up to ``drain_s`` for our machines to go, then fill the
    shared columns and check invariants 1 (runs and machines per job), 2 (no lost job), 3 (no
    leak) and 4 (peak live <= ``cap``, when given). Returns our machines, destroyed included."""
    result.jobs = len(jobs)
    wait_for(lambda: not live(ours(api.machines(app))), drain_s)
    machines = ours(api.machines(app))
    check_jobs(result, side_effects(ctx.redis, ctx.key), jobs, may_be_dead=may_be_dead)
    check_machines(result, machines, jobs=jobs, leaked=live(machines), max_per_job=max_per_job)
    check_peak(result, ctx, api, app, cap)
    return machines


def check_peak(
    result: ScenarioResult, ctx: ChaosContext, api: LocalAPI, app: str, cap: int | None,
    what: str = "caps hold",
) -> None:
    """The shared columns of a scenario's end: peak live vs ``cap`` (invariant 4, ``what`` it
    says, when a cap is given; who was live at the peak if it was broken), 429s and dead
    letters."""
    result.peak_live = api.peak_live(app)
    result.cap = cap
    if cap is not None:
        if result.peak_live > cap:
            result.details["crowd"] = crowd(api.machines(app))[1]
        result.check(result.peak_live <= cap, f"invariant 4 ({what}): {result.peak_live} "
                                              f"machines live at once, cap {cap}")
    result.rate_limited = api.rate_limited()
    result.details["dead_letters"] = dead_letters(ctx)
