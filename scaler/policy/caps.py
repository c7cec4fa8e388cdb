"""Capacity: what is live per pool, app and globally, and a fair split of the room that is left.

Live machines are those :func:`~scaler.policy.states.is_live` says cost money or may start, plus the
act step's in-flight launches, plus every per-job claim whose machine no listing shows yet (its
create is pending, failed and waiting to be tried again, or the listing lags): a claim holds its
pool's slot from the moment it is made until its job is finished or given back, so a queue is never
claimed past the caps however slow or refused the creates are. Stopped warm machines are not live:
a Start makes one live, so a Start needs room like a create does (but no create token).

When an app's listing is unknown its live count is taken at its worst case (its app cap, else the
sum of its pools' ``max_machines``), so the global cap still holds without blocking every other app.

Room is split by max-min fairness on live machines (water-filling): a unit of room goes to the pool
with demand that has the fewest live machines (in-flight launches and held claims included), ties
to the pool whose work waited longest (then pool order), until its demand, its app's room, its
app's create tokens, the global room or a cost budget over it (:mod:`scaler.policy.budget_room`)
runs out. A pool's demand therefore cannot starve another
pool, and neither can its head start: when one slot frees under a full global cap, it goes to the
pool holding the fewest, not back to whichever pool happens to rank first.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scaler.policy.index import AppIndex, ClaimIndex, claim_machine, index_apps, index_claims
from scaler.policy.slots import is_idle_slot
from scaler.policy.states import is_live
from scaler.policy.types import Caps, Observation, PoolPolicy

if TYPE_CHECKING:
    from scaler.policy.budget_room import BudgetRoom

__all__ = ["Grant", "Ledger", "Request", "allocate", "pick_app", "unknown_app_estimate"]

_UNLIMITED = sys.maxsize


def unknown_app_estimate(app: str, pools: Sequence[PoolPolicy], caps: Caps) -> int:
    """Worst-case live machines of an app whose listing failed."""
    cap = caps.per_app.get(app)
    if cap is not None:
        return cap
    return sum(p.max_machines for p in pools if app in p.fly_apps)


@dataclass(slots=True)
class Ledger:
    """Live counts against caps, updated as the planner grants room; plus create tokens per app."""

    caps: Caps
    pool_cap: dict[str, int]
    pool_live: dict[str, int] = field(default_factory=dict)
    app_live: dict[str, int] = field(default_factory=dict)
    global_live: int = 0
    budget: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_observation(
        cls,
        obs: Observation,
        pools: Sequence[PoolPolicy],
        caps: Caps,
        apps: Mapping[str, AppIndex] | None = None,
        claims: ClaimIndex | None = None,
    ) -> Ledger:
        """Count live machines, in-flight launches and claims without a listed machine; floor the
        create budgets. ``apps`` and ``claims``: the planner's indexes, if already built."""
        ledger = cls(caps=caps, pool_cap={p.name: p.max_machines for p in pools})
        all_apps = dict.fromkeys([*obs.machines_by_app, *(a for p in pools for a in p.fly_apps)])
        for app in all_apps:
            machines = obs.machines_by_app.get(app)
            if machines is None:
                estimate = unknown_app_estimate(app, pools, caps)
                ledger.app_live[app] = estimate
                ledger.global_live += estimate
                for p in pools:
                    if app in p.fly_apps:
                        ledger.pool_live[p.name] = p.max_machines
                continue
            # The pools a machine listed in this app may belong to.
            owners = {p.name for p in pools if app in p.fly_apps}
            count = 0
            per_pool: dict[str | None, int] = {}
            for m in machines:
                if not is_live(m.state) or is_idle_slot(m):
                    continue
                count += 1
                per_pool[m.pool] = per_pool.get(m.pool, 0) + 1
            for pool, n in per_pool.items():
                if pool in owners:
                    ledger.pool_live[pool] = ledger.pool_live.get(pool, 0) + n
            ledger.app_live[app] = count
            ledger.global_live += count
        for p in pools:
            if any(obs.machines_by_app.get(a) is None for a in p.fly_apps):
                continue
            extra = max(0, obs.inflight.get(p.name, 0))
            ledger.pool_live[p.name] = ledger.pool_live.get(p.name, 0) + extra
            # In-flight work is counted per pool: over several apps, each app counts all of it
            # (its app cap holds whichever app the work lands in).
            for a in p.fly_apps:
                ledger.app_live[a] = ledger.app_live.get(a, 0) + extra
            ledger.global_live += extra
        ledger._count_claims(
            obs, pools, apps, claims if claims is not None else index_claims(obs.claims, pools)
        )
        for app in all_apps:
            ledger.budget[app] = max(0, int(obs.create_budget.get(app, 0.0)))
        return ledger

    def _count_claims(
        self,
        obs: Observation,
        pools: Sequence[PoolPolicy],
        apps: Mapping[str, AppIndex] | None,
        claims: ClaimIndex,
    ) -> None:
        """A claim holds a slot of its pool: count the claims whose machine is not listed (or is
        listed under another pool's label, e.g. before a rename) on top of the listing. The
        apps' index (``None``: not built yet) is built only when some pool has claims."""
        for p in pools:
            if p.mode != "per-job" or any(obs.machines_by_app.get(a) is None for a in p.fly_apps):
                continue  # an unknown app is already at its worst case
            extra = 0
            held = claims.by_pool.get(p.name, ())
            if held and apps is None:
                apps = index_apps(obs, pools)
            for c in held:
                known, m = claim_machine(c, p.app, apps or {})
                if not known or m is None or is_idle_slot(m):
                    extra += 1  # no machine yet, or a warm slot bound and about to start
                    app = c.app or p.app
                    self.app_live[app] = self.app_live.get(app, 0) + 1
                elif is_live(m.state) and m.pool != p.name:
                    self.pool_live[p.name] = self.live(p.name) + 1
            self.pool_live[p.name] = self.live(p.name) + extra
            self.global_live += extra

    def live(self, pool: str) -> int:
        """Live machines of a pool, in-flight launches included."""
        return self.pool_live.get(pool, 0)

    def pool_room(self, pool: str) -> int:
        """Machines the pool cap still allows."""
        return max(0, self.pool_cap.get(pool, 0) - self.live(pool))

    def app_room(self, app: str) -> int:
        """Machines the app cap still allows (a very large number if the app has no cap)."""
        cap = self.caps.per_app.get(app)
        if cap is None:
            return _UNLIMITED
        return max(0, cap - self.app_live.get(app, 0))

    def global_room(self) -> int:
        """Machines the global cap still allows."""
        return max(0, self.caps.global_max - self.global_live)

    def excess(self, pool: str, app: str) -> int:
        """Live machines above the tightest cap over ``pool`` (0 when every cap holds)."""
        app_cap = self.caps.per_app.get(app)
        return max(
            0,
            self.live(pool) - self.pool_cap.get(pool, 0),
            self.app_live.get(app, 0) - app_cap if app_cap is not None else 0,
            self.global_live - self.caps.global_max,
        )

    def take(self, pool: str, app: str, count: int, creates: int) -> None:
        """Record ``count`` machines made live, ``creates`` of them by a create call."""
        self.pool_live[pool] = self.live(pool) + count
        self.app_live[app] = self.app_live.get(app, 0) + count
        self.global_live += count
        self.budget[app] = self.budget.get(app, 0) - creates


@dataclass(frozen=True, slots=True)
class Request:
    """A pool asking for ``want`` more live machines.

    ``free`` of them (served first) need no create token (Starts); ``rank`` breaks ties between
    pools holding as many machines, lowest first. ``apps``: a pool over several apps may create
    in any of them (empty: ``app`` alone).
    """

    pool: str
    app: str
    want: int
    free: int = 0
    rank: tuple[float, int] = (0.0, 0)
    apps: tuple[str, ...] = ()

    @property
    def all_apps(self) -> tuple[str, ...]:
        """The apps this request may be served in."""
        return self.apps or (self.app,)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a pool got: ``count`` machines, ``free`` of them without a create token.

    ``limit`` names what stopped the rest (``"cap_pool"``, ``"cap_app"``, ``"rate_limit"``,
    ``"cap_global"``, ``"budget"``), ``None`` if the whole request was granted. ``by_app``: the
    granted units per app, in the order they were first given (empty when nothing was granted).
    """

    pool: str
    count: int
    free: int
    limit: str | None
    by_app: Mapping[str, int] = field(default_factory=dict)

    @property
    def creates(self) -> int:
        """Granted units that need a create token."""
        return self.count - self.free


def allocate(
    requests: Sequence[Request], ledger: Ledger, money: BudgetRoom | None = None
) -> Mapping[str, Grant]:
    """Split the room left in ``ledger`` among ``requests`` fairly; the ledger is not changed.
    ``money``: the cost budgets' room, one more limit every unit (Start or create) must fit;
    the grants are taken from it.

    A request over several apps takes each unit in the app with the most create tokens left, then
    the fewest live machines, then the order of its apps (:func:`pick_app`)."""
    order = sorted(requests, key=lambda r: r.rank)
    rem: dict[str, int] = {}
    free_left: dict[str, int] = {}
    got: dict[str, int] = {}
    got_free: dict[str, int] = {}
    by_app: dict[str, dict[str, int]] = {}
    every_app = dict.fromkeys(a for r in order for a in r.all_apps)
    for r in order:
        rem[r.pool] = min(max(0, r.want), ledger.pool_room(r.pool))
        free_left[r.pool] = min(max(0, r.free), rem[r.pool])
        got[r.pool] = 0
        got_free[r.pool] = 0
        by_app[r.pool] = {}
    app_room = {a: ledger.app_room(a) for a in every_app}
    budget = {a: ledger.budget.get(a, 0) for a in every_app}
    app_live = {a: ledger.app_live.get(a, 0) for a in every_app}
    glob = ledger.global_room()

    def target(r: Request) -> str | None:
        if len(r.all_apps) == 1:
            a = r.app if not r.apps else r.apps[0]
            ok = app_room[a] > 0 and (free_left[r.pool] > 0 or budget[a] > 0)
            return a if ok else None
        return pick_app(r.all_apps, app_room, budget, app_live, free_left[r.pool] > 0)

    def can(r: Request) -> bool:
        return (
            rem[r.pool] > 0
            and glob > 0
            and target(r) is not None
            and (money is None or money.fits(r.pool))
        )

    def give(r: Request, k: int) -> None:
        nonlocal glob
        a = target(r)
        assert a is not None
        rem[r.pool] -= k
        got[r.pool] += k
        glob -= k
        app_room[a] -= k
        app_live[a] += k
        by_app[r.pool][a] = by_app[r.pool].get(a, 0) + k
        if money is not None:
            money.take(r.pool, k)
        if free_left[r.pool] >= k:
            free_left[r.pool] -= k
            got_free[r.pool] += k
        else:
            budget[a] -= k

    # Water-filling on each pool's level (its live machines plus what it got so far): the pools at
    # the lowest level rise together, by whole steps up to the next level or until a room, a budget
    # or a pool's free units run out; single units left over go in rank order (the oldest work).
    # A pool that already holds more of the shared room waits until the others catch up. Steps, not
    # units, so the loop runs O(pools) times however large the room (a pool over several apps
    # steps by one unit, each placed in its best app, so it is bounded by its apps' budgets).
    def level(r: Request) -> int:
        return ledger.live(r.pool) + got[r.pool]

    active = [r for r in order if rem[r.pool] > 0]
    while True:
        active = [r for r in active if can(r)]
        if not active:
            break
        low = min(level(r) for r in active)
        lowest = [r for r in active if level(r) == low]
        above = [level(r) for r in active if level(r) > low]
        # Nobody crosses from free units to create tokens inside a step, so all rooms stay exact.
        inc = min(glob // len(lowest), min(rem[r.pool] for r in lowest))
        if above:
            inc = min(inc, min(above) - low)
        if any(len(r.all_apps) > 1 for r in lowest):
            inc = min(inc, 1)
        for app, n in Counter(r.all_apps[0] for r in lowest).items():
            inc = min(inc, app_room[app] // n)
        for app, n in Counter(r.all_apps[0] for r in lowest if free_left[r.pool] == 0).items():
            inc = min(inc, budget[app] // n)
        for r in lowest:
            if free_left[r.pool] > 0:
                inc = min(inc, free_left[r.pool])
        if money is not None:
            inc = min(inc, money.step(r.pool for r in lowest))
        if inc >= 1:
            for r in lowest:
                if can(r):  # a pool over several apps may have taken a shared app's last unit
                    give(r, inc)
            continue
        for r in lowest:  # fewer units than pools at this level: rank decides
            if can(r):
                give(r, 1)

    grants: dict[str, Grant] = {}
    for r in order:
        limit: str | None = None
        if got[r.pool] < r.want:
            if got[r.pool] >= ledger.pool_room(r.pool):
                limit = "cap_pool"
            elif all(app_room[a] <= 0 for a in r.all_apps):
                limit = "cap_app"
            elif free_left[r.pool] == 0 and all(
                budget[a] <= 0 for a in r.all_apps if app_room[a] > 0
            ):
                limit = "rate_limit"
            elif money is not None and not money.fits(r.pool):
                limit = money.reason
            else:
                limit = "cap_global"
        grants[r.pool] = Grant(r.pool, got[r.pool], got_free[r.pool], limit, by_app[r.pool])
    return grants


def pick_app(
    apps: Sequence[str],
    room: Mapping[str, int],
    budget: Mapping[str, int],
    live: Mapping[str, int],
    free: bool,
) -> str | None:
    """The app of a pool over several apps that takes its next machine: among the apps with room
    under their app cap (and a create token, unless the unit is ``free``), the one with the most
    create tokens left, then the fewest live machines, then the first listed. ``None``: none can.
    """
    best: str | None = None
    for a in apps:
        if room[a] <= 0 or (not free and budget[a] <= 0):
            continue
        if best is None or (budget[a], -live[a]) > (budget[best], -live[best]):
            best = a
    return best
