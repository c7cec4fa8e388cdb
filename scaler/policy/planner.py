"""``plan(observation, pools, caps) -> Plan``: the pure function at the centre of the scaler.

Order of work, and why:

1. Housekeeping per pool whose app listing is known: first every per-job claim finds its machine
   and is released if that machine is gone or condemned (:mod:`~scaler.policy.perjob`); machines
   owned by a claim are then off limits to every other rule. Then machines are reaped or marked
   (per-job, :mod:`~scaler.policy.perjob`; worker, :mod:`~scaler.policy.workers`), and machines
   whose pool is unknown. Destroys do not free room this tick: a machine is live until it is gone.
2. Relaunches of claims that lost their create, before any new work: those jobs waited longest.
3. New capacity for every pool at once, split fairly (:mod:`~scaler.policy.caps`): per-job
   Launches up to the ready count, worker Starts of warm machines before Creates. Every create
   (Launch, Relaunch, Create) spends one token of the app's ``create_budget``.
4. Worker pools with a known signal destroy stopped machines beyond ``warm_machines``.
5. Per-job pools with ``warm_slots`` create their missing slots with the create budget left
   (:mod:`~scaler.policy.slots`; free slots were judged before the reaper, and are started for
   ready jobs in step 3 before anything is created).

Pools on an app whose listing is unknown get no action at all, only an ``unknown_data`` decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scaler.policy.builder import PlanBuilder
from scaler.policy.caps import Grant, Ledger, Request, allocate
from scaler.policy.explain import describe
from scaler.policy.index import AppIndex, ClaimIndex, index_apps, index_claims
from scaler.policy.perjob import (
    QueueDemand,
    launch_demand,
    reap,
    release_claims,
    release_claims_of_destroyed,
    settle_ownerless,
)
from scaler.policy.reaper import orphan_grace, reap_finished, reap_orphan
from scaler.policy.slots import free_slots, refill_slots
from scaler.policy.states import is_gone
from scaler.policy.types import (
    Caps,
    ClaimView,
    Create,
    Decision,
    GiveBack,
    Launch,
    MachineView,
    Observation,
    Plan,
    PoolPolicy,
    Relaunch,
    SlotLaunch,
)
from scaler.policy.workers import Signal, desired_workers, reap_workers

__all__ = ["plan"]

Inputs = dict[str, float | int | str]


def plan(obs: Observation, pools: Sequence[PoolPolicy], caps: Caps) -> Plan:
    """Plan one tick: actions to take and a decision (taken or not) for every pool.

    Raises:
        ValueError: two pools share a name.
    """
    pools = tuple(pools)
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"pool names must be unique; rename the duplicates: {dup}")
    apps = index_apps(obs, pools)
    claims = index_claims(obs.claims, pools)
    ledger = Ledger.from_observation(obs, pools, caps, apps, claims)
    out = PlanBuilder()
    desired: dict[str, int] = {}

    relaunch: dict[str, list[ClaimView]] = {}
    owned: set[str] = set()
    for p in pools:
        if p.mode == "per-job":
            found = release_claims(p, apps, claims, obs.now, out, owned)
            if p.app in apps:  # relaunching needs the pool's own app listing (its caps)
                relaunch[p.name] = found
            elif found:
                out.tally.count(p.name, "relaunch", "unknown_data", "not_taken", len(found))
    every_app_known = all(ms is not None for ms in obs.machines_by_app.values())
    settle_ownerless(claims, apps, obs.now, out, owned, every_app_known)
    release_claims_of_destroyed(pools, apps, claims, out)
    stopped: dict[str, list[MachineView]] = {}
    slots: dict[str, list[MachineView]] = {}
    for p in pools:
        idx = apps.get(p.app)
        if idx is None:
            continue
        if p.mode == "per-job":
            slots[p.name] = free_slots(p, idx, obs.slot_jobs, obs.now, out, owned)
            reap(p, idx, claims, obs.now, out, owned)
        else:
            stopped[p.name] = reap_workers(p, idx, obs.now, out, owned)
    for app, idx in apps.items():
        _reap_unknown_pool(idx, orphan_grace(app, pools), obs.now, out, owned, claims)

    _relaunch(pools, relaunch, ledger, obs, out)
    _scale(pools, obs, apps, claims, stopped, ledger, out, desired, slots)
    for p in pools:
        idx = apps.get(p.app)
        if p.mode == "per-job" and idx is not None and (p.warm_slots or p.name in slots):
            made = refill_slots(p, idx, obs.inflight.get(p.name, 0), ledger.budget.get(p.app, 0),
                                out)
            ledger.take(p.name, p.app, 0, made)
    return out.build(desired)


def _reap_unknown_pool(
    idx: AppIndex, grace: float, now: float, out: PlanBuilder, owned: set[str],
    claims: ClaimIndex,
) -> None:
    """Machines whose pool is unknown and that no claim owns: failed and stopped ones go at once,
    one whose job finished is left to exit, other running ones are orphans, but only while every
    queue's claims could be read (an unread claim may own the machine)."""
    for m in idx.by_pool.get(None, ()):
        if is_gone(m.state) or m.id in owned:
            continue
        if m.state == "failed":
            out.destroy(None, m, "failed", True)
        elif m.state == "stopped":
            out.destroy(None, m, "stopped", False)
        elif m.finished_at is not None:
            reap_finished(out, None, m, m.finished_at, grace, now)
        elif not claims.known(None):
            out.tally.count(None, "reap", "unknown_data", "not_taken")
        else:
            reap_orphan(out, None, m, grace, now, "unknown_pool")


def _relaunch(
    pools: Sequence[PoolPolicy],
    relaunch: Mapping[str, list[ClaimView]],
    ledger: Ledger,
    obs: Observation,
    out: PlanBuilder,
) -> None:
    """Relaunch claims, oldest first across pools. A claim already holds its slot in the caps
    (see :class:`~scaler.policy.caps.Ledger`), so the app's create budget limits this, except when
    a cap was lowered below what is live: then the newest claims without a machine give their job
    back to the queue instead (it waits there for room), so the caps hold again.

    Relaunches come before new work, but a pool's relaunches take at most its fair share of the
    app's create budget (the budget over the app's pools that want creates): a pool whose creates
    keep failing never starves the other pools of its app."""
    by_name = {p.name: p for p in pools}
    share = _fair_shares(pools, by_name, relaunch, ledger, obs)
    used: dict[str, int] = {}
    for name, cs in relaunch.items():
        p = by_name[name]
        excess = min(len(cs), ledger.excess(p.name, p.app))
        for c in reversed(cs[len(cs) - excess:]):
            out.claim_action(GiveBack(p.name, c, "over_cap"), "give_back")
            ledger.take(p.name, p.app, -1, 0)
    waiting: dict[str, int] = {}
    cands = sorted(
        ((c, by_name[name]) for name, cs in relaunch.items() for c in cs
         if c.job not in out.claims),
        key=lambda cp: (cp[0].claimed_at, cp[0].job),
    )
    for c, p in cands:
        if ledger.budget.get(p.app, 0) >= 1 and used.get(p.name, 0) < share[p.name]:
            out.claim_action(Relaunch(p.name, p.app, c), "relaunch")
            ledger.take(p.name, p.app, 0, 1)
            used[p.name] = used.get(p.name, 0) + 1
        else:
            waiting[p.name] = waiting.get(p.name, 0) + 1
    for name, n in waiting.items():
        out.tally.count(name, "relaunch", "rate_limit", "not_taken", n)


def _fair_shares(
    pools: Sequence[PoolPolicy],
    by_name: Mapping[str, PoolPolicy],
    relaunch: Mapping[str, list[ClaimView]],
    ledger: Ledger,
    obs: Observation,
) -> dict[str, int]:
    """Per pool with relaunches, the create tokens its relaunches may take: the app's budget split
    evenly (rounded up) over the app's pools that want creates now."""
    wanting: dict[str, int] = {}
    for p in pools:
        ready = any((v := obs.queues.get(q)) is not None and v.ready > 0 for q in p.queues)
        if relaunch.get(p.name) or ready:
            wanting[p.app] = wanting.get(p.app, 0) + 1
    return {
        name: -(-ledger.budget.get(app, 0) // max(1, wanting.get(app, 1)))
        for name in relaunch
        for app in (by_name[name].app,)
    }


def _oldest_age(p: PoolPolicy, obs: Observation) -> float:
    ages = [
        v.oldest_ready_age_s
        for q in p.queues
        if (v := obs.queues.get(q)) is not None and v.oldest_ready_age_s is not None
    ]
    return max(ages, default=0.0)


def _scale(
    pools: Sequence[PoolPolicy],
    obs: Observation,
    apps: Mapping[str, AppIndex],
    claims: ClaimIndex,
    stopped: Mapping[str, list[MachineView]],
    ledger: Ledger,
    out: PlanBuilder,
    desired: dict[str, int],
    slots: Mapping[str, list[MachineView]],
) -> None:
    remaining: dict[str, int] = {}
    demands: dict[str, QueueDemand] = {}
    signals: dict[str, Signal] = {}
    requests: list[Request] = []
    for i, p in enumerate(pools):
        live = ledger.live(p.name)
        if p.app not in apps:
            desired[p.name] = live
            continue
        if p.mode == "per-job":
            d = launch_demand(p, obs, claims, remaining)
            demands[p.name] = d
            desired[p.name] = min(p.max_machines, live + d.total) if d.total else live
            free = min(d.total, len(slots.get(p.name, ())))
            requests.append(Request(p.name, p.app, d.total, free, (-d.oldest_age, i)))
        else:
            sig = desired_workers(p, obs, live)
            signals[p.name] = sig
            desired[p.name] = sig.desired
            want = max(0, sig.desired - live)
            free = min(want, len(stopped.get(p.name, ())))
            requests.append(Request(p.name, p.app, want, free, (-_oldest_age(p, obs), i)))
    before = {p.name: _snapshot(p, ledger) for p in pools}
    grants = allocate(requests, ledger)
    for p in pools:
        if p.app not in apps:
            out.tally.add(
                Decision(
                    p.name,
                    "skip",
                    "not_taken",
                    "unknown_data",
                    0,
                    {"app": p.app},
                    f"{p.name}: machine listing of app {p.app} unknown: "
                    "no launch, destroy or requeue until it can be read",
                )
            )
        elif p.mode == "per-job":
            _apply_launch(
                p, demands[p.name], grants[p.name], remaining, ledger, out, before[p.name],
                slots.get(p.name, []),
            )
        else:
            _apply_workers(
                p,
                signals[p.name],
                grants[p.name],
                stopped.get(p.name, []),
                ledger,
                out,
                before[p.name],
            )


def _snapshot(p: PoolPolicy, ledger: Ledger) -> Inputs:
    app_cap = ledger.caps.per_app.get(p.app)
    return {
        "live": ledger.live(p.name),
        "cap": p.max_machines,
        "app_live": ledger.app_live.get(p.app, 0),
        "app_cap": app_cap if app_cap is not None else "none",
        "global_live": ledger.global_live,
        "global_cap": ledger.caps.global_max,
        "create_budget": ledger.budget.get(p.app, 0),
    }


def _apply_launch(
    p: PoolPolicy,
    d: QueueDemand,
    g: Grant,
    remaining: dict[str, int],
    ledger: Ledger,
    out: PlanBuilder,
    snap: Inputs,
    slots: list[MachineView],
) -> None:
    launched = 0
    free = slots[: g.free]  # warm slots first: a start needs no create token
    for q in d.ready:  # in the pool's queue order
        n = min(len(free), remaining[q])
        if n > 0:
            out.add(SlotLaunch(p.name, p.app, q, tuple(free[:n])))
            for m in free[:n]:
                out.machines.add(m.id)
            free = free[n:]
            remaining[q] -= n
            launched += n
    on_slots = launched
    for q in d.ready:
        n = min(g.count - launched, remaining[q])
        if n > 0:
            out.add(Launch(p.name, p.app, q, n))
            remaining[q] -= n
            launched += n
    ledger.take(p.name, p.app, launched, launched - on_slots)
    want = d.total
    inputs: Inputs = {"ready": want, **snap}
    head = (
        f"{p.name}: {want} ready, {snap['live']} live of cap {p.max_machines}: launching {launched}"
        + (f" ({on_slots} on warm slots)" if on_slots else "")
    )
    decided = False
    if launched:
        out.tally.add(Decision(p.name, "launch", "acted", "demand", launched, inputs, head))
        decided = True
    if want > launched:
        reason = g.limit if g.limit is not None else "no_demand"
        msg = f"{head} ({describe(reason)})"
        if reason == "no_demand":
            msg = f"{head} (ready messages taken by another pool on the same queue)"
        out.tally.add(Decision(p.name, "launch", "not_taken", reason, want - launched, inputs, msg))
        decided = True
    if d.unknown:
        queues = ", ".join(d.unknown)
        out.tally.add(
            Decision(
                p.name,
                "launch",
                "not_taken",
                "unknown_data",
                0,
                {**inputs, "unknown_queues": queues},
                f"{p.name}: queue stats or claims of {queues} unknown: no launch for them",
            )
        )
        decided = True
    if not decided:
        out.tally.add(
            Decision(p.name, "launch", "not_taken", "no_demand", 0, inputs, f"{head} (no demand)")
        )


def _apply_workers(
    p: PoolPolicy,
    sig: Signal,
    g: Grant,
    stopped: list[MachineView],
    ledger: Ledger,
    out: PlanBuilder,
    snap: Inputs,
) -> None:
    startable = [m for m in stopped if not out.touched(m)]
    starts = 0
    for m in startable[: g.free]:
        if out.start(p.name, m):
            starts += 1
    creates = g.creates
    if creates:
        out.add(Create(p.name, p.app, creates))
    ledger.take(p.name, p.app, starts + creates, creates)
    live = int(snap["live"])
    want = max(0, sig.desired - live)
    inputs: Inputs = {**sig.inputs, **snap, "desired": sig.desired, "stopped": len(startable)}
    head = f"{p.name}: desired {sig.desired}, {live} live of cap {p.max_machines}"
    if starts:
        msg = f"{head}: starting {starts} warm machine(s)"
        out.tally.add(Decision(p.name, "start", "acted", "scale_up", starts, inputs, msg))
    if creates:
        msg = f"{head}: creating {creates} machine(s)"
        out.tally.add(Decision(p.name, "create", "acted", "scale_up", creates, inputs, msg))
    if want > starts + creates:
        reason = g.limit or "cap_pool"
        msg = f"{head}: {want - starts - creates} more not started ({describe(reason)})"
        out.tally.add(
            Decision(p.name, "create", "not_taken", reason, want - starts - creates, inputs, msg)
        )
    if not sig.known:
        msg = f"{head}: signal unknown, holding (no scale-down, warm machines kept)"
        out.tally.add(Decision(p.name, "scale", "not_taken", "unknown_data", 0, inputs, msg))
        return
    extra = startable[starts + p.warm_machines :]
    for m in extra:
        out.destroy(p.name, m, "stopped", False)
    if want == 0 and not extra:
        msg = f"{head}: no scale-up needed"
        out.tally.add(Decision(p.name, "scale", "not_taken", "no_demand", 0, inputs, msg))
