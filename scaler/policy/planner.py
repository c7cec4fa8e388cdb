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
   (Launch, Relaunch, Create) spends one token of the app's ``create_budget``. Every Launch, Start
   and Create must also fit the cost budgets (:mod:`~scaler.policy.budget`) or waits with reason
   ``budget``; relaunches do not (their job's spend is already committed).
4. Worker pools with a known signal destroy stopped machines beyond ``warm_machines`` (suspended
   ones beyond ``warm_suspended``), and suspend idle workers they do not need into that tier
   (:mod:`~scaler.policy.suspend`). Warm Starts take suspended machines before stopped ones.
5. Per-job pools with ``warm_slots`` create their missing slots with the create budget left
   (:mod:`~scaler.policy.slots`; free slots were judged before the reaper, and are started for
   ready jobs in step 3 before anything is created).

Pools on an app whose listing is unknown get no action at all, only an ``unknown_data`` decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scaler.policy.budget_room import BudgetRoom
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
from scaler.policy.runners import cap_runner_demand, plan_runners
from scaler.policy.slots import free_slots, refill_slots
from scaler.policy.states import RESTING_STATES, is_gone
from scaler.policy.suspend import plan_suspends
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
            if _known(p, apps):  # relaunching needs the pool's own app listings (its caps)
                relaunch[p.name] = found
            elif found:
                out.tally.count(p.name, "relaunch", "unknown_data", "not_taken", len(found))
    every_app_known = all(ms is not None for ms in obs.machines_by_app.values())
    settle_ownerless(claims, apps, obs.now, out, owned, every_app_known)
    release_claims_of_destroyed(pools, apps, claims, out)
    stopped: dict[str, list[MachineView]] = {}
    started: dict[str, list[MachineView]] = {}
    slots: dict[str, list[MachineView]] = {}
    for p in pools:
        for app in p.fly_apps:
            idx = apps.get(app)
            if idx is None:
                continue
            if p.mode == "per-job":
                if app == p.app:  # warm slots live in the pool's first app (config: one app)
                    plan_runners(p, apps, claims, obs, out)
                    slots[p.name] = free_slots(p, idx, obs.slot_jobs, obs.now, out, owned)
                reap(p, idx, claims, obs.now, out, owned)
            else:
                stopped[p.name] = reap_workers(p, idx, obs.now, out, owned)
                started[p.name] = [m for m in idx.by_pool.get(p.name, ()) if m.state == "started"]
    for app, idx in apps.items():
        _reap_unknown_pool(idx, orphan_grace(app, pools), obs.now, out, owned, claims)

    _relaunch(pools, relaunch, ledger, obs, out)
    _scale(pools, obs, apps, claims, stopped, ledger, out, desired, slots, started)
    for p in pools:
        idx = apps.get(p.app)
        if p.mode == "per-job" and idx is not None and (p.warm_slots or p.name in slots):
            rooms = {"cap_pool": ledger.pool_room(p.name), "cap_app": ledger.app_room(p.app),
                     "cap_global": ledger.global_room()}
            tightest = min(rooms, key=lambda r: rooms[r])
            made = refill_slots(p, idx, obs.inflight.get(p.name, 0), ledger.budget.get(p.app, 0),
                                rooms[tightest], out, tightest)
            ledger.take(p.name, p.app, made, made)
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
        elif m.state in RESTING_STATES:
            out.destroy(None, m, m.state, False)
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
        excess = min(len(cs), max(ledger.excess(p.name, a) for a in p.fly_apps))
        for c in reversed(cs[len(cs) - excess:]):
            out.claim_action(GiveBack(p.name, c, "over_cap"), "give_back")
            ledger.take(p.name, c.app or p.app, -1, 0)
    waiting: dict[str, int] = {}
    cands = sorted(
        ((c, by_name[name]) for name, cs in relaunch.items() for c in cs
         if c.job not in out.claims),
        key=lambda cp: (cp[0].claimed_at, cp[0].job),
    )
    for c, p in cands:
        app = c.app or p.app  # a relaunch stays in its claim's app (an earlier create may land)
        if ledger.budget.get(app, 0) >= 1 and used.get(p.name, 0) < share[p.name]:
            out.claim_action(Relaunch(p.name, app, c), "relaunch")
            ledger.take(p.name, app, 0, 1)
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
            for a in p.fly_apps:
                wanting[a] = wanting.get(a, 0) + 1
    return {
        name: sum(
            -(-ledger.budget.get(app, 0) // max(1, wanting.get(app, 1)))
            for app in by_name[name].fly_apps
        )
        for name in relaunch
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
    started: Mapping[str, list[MachineView]],
) -> None:
    remaining: dict[str, int] = {}
    demands: dict[str, QueueDemand] = {}
    signals: dict[str, Signal] = {}
    requests: list[Request] = []
    for i, p in enumerate(pools):
        live = ledger.live(p.name)
        if not _known(p, apps):
            desired[p.name] = live
            continue
        if p.mode == "per-job":
            d = launch_demand(p, obs, claims, remaining)
            cap_runner_demand(p, d, obs, claims, out)
            demands[p.name] = d
            desired[p.name] = min(p.max_machines, live + d.total) if d.total else live
            free = min(d.total, len(slots.get(p.name, ())))
            requests.append(Request(p.name, p.app, d.total, free, (-d.oldest_age, i), p.apps))
        else:
            sig = desired_workers(p, obs, live)
            signals[p.name] = sig
            desired[p.name] = sig.desired
            want = max(0, sig.desired - live)
            free = min(want, len(stopped.get(p.name, ())))
            requests.append(Request(p.name, p.app, want, free, (-_oldest_age(p, obs), i)))
    money = BudgetRoom.from_observation(obs, pools, ledger.caps.budgets, ledger, apps)
    before = {p.name: {**_snapshot(p, ledger), **money.inputs(p.name)} for p in pools}
    grants = allocate(requests, ledger, money)
    for p in pools:
        if not _known(p, apps):
            missing = ",".join(a for a in p.fly_apps if a not in apps)
            out.tally.add(
                Decision(
                    p.name,
                    "skip",
                    "not_taken",
                    "unknown_data",
                    0,
                    {"app": missing},
                    f"{p.name}: machine listing of app {missing} unknown: "
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
                started.get(p.name, []),
            )


def _known(p: PoolPolicy, apps: Mapping[str, AppIndex]) -> bool:
    """Whether every app of the pool was listed (its caps span them all)."""
    return all(a in apps for a in p.fly_apps)


def _snapshot(p: PoolPolicy, ledger: Ledger) -> Inputs:
    """The numbers a pool's decision was made on; over several apps, their sums."""
    caps = [ledger.caps.per_app.get(a) for a in p.fly_apps]
    app_cap: int | str = "none" if any(c is None for c in caps) else sum(c or 0 for c in caps)
    return {
        "live": ledger.live(p.name),
        "cap": p.max_machines,
        "app_live": sum(ledger.app_live.get(a, 0) for a in p.fly_apps),
        "app_cap": app_cap,
        "global_live": ledger.global_live,
        "global_cap": ledger.caps.global_max,
        "create_budget": sum(ledger.budget.get(a, 0) for a in p.fly_apps),
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
    ledger.take(p.name, p.app, on_slots, 0)
    # The rest is created, in the apps the grant chose (slots are in the pool's first app).
    by_app = dict(g.by_app) if g.by_app else {p.app: g.count}
    by_app[p.app] = max(0, by_app.get(p.app, 0) - on_slots)
    for app, count in by_app.items():
        in_app = 0
        for q in d.ready:
            n = min(count - in_app, remaining[q])
            if n > 0:
                out.add(Launch(p.name, app, q, n))
                remaining[q] -= n
                in_app += n
        ledger.take(p.name, app, in_app, in_app)
        launched += in_app
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
    running: Sequence[MachineView] = (),
) -> None:
    startable = [m for m in stopped if not out.touched(m)]  # suspended first, then stopped
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
    rest = startable[starts:]
    kept_suspended = [m for m in rest if m.state == "suspended"][: p.warm_suspended]
    extra = [m for m in rest if m.state != "suspended"][p.warm_machines :] + [
        m for m in rest if m.state == "suspended"
    ][p.warm_suspended :]
    for m in extra:
        out.destroy(p.name, m, m.state, False)
    if p.warm_suspended:
        plan_suspends(p, running, len(kept_suspended), sig.desired, live, out)
    if want == 0 and not extra:
        msg = f"{head}: no scale-up needed"
        out.tally.add(Decision(p.name, "scale", "not_taken", "no_demand", 0, inputs, msg))
