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
app's create tokens or the global room runs out. A pool's demand therefore cannot starve another
pool, and neither can its head start: when one slot frees under a full global cap, it goes to the
pool holding the fewest, not back to whichever pool happens to rank first.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scaler.policy.index import AppIndex, ClaimIndex, claim_machine, index_apps, index_claims
from scaler.policy.slots import is_idle_slot
from scaler.policy.states import is_live
from scaler.policy.types import Caps, Observation, PoolPolicy

__all__ = ["Grant", "Ledger", "Request", "allocate", "unknown_app_estimate"]

_UNLIMITED = sys.maxsize


def unknown_app_estimate(app: str, pools: Sequence[PoolPolicy], caps: Caps) -> int:
    """Worst-case live machines of an app whose listing failed."""
    cap = caps.per_app.get(app)
    if cap is not None:
        return cap
    return sum(p.max_machines for p in pools if p.app == app)


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
        by_name = {p.name: p for p in pools}
        ledger = cls(caps=caps, pool_cap={p.name: p.max_machines for p in pools})
        all_apps = dict.fromkeys([*obs.machines_by_app, *(p.app for p in pools)])
        for app in all_apps:
            machines = obs.machines_by_app.get(app)
            if machines is None:
                estimate = unknown_app_estimate(app, pools, caps)
                ledger.app_live[app] = estimate
                ledger.global_live += estimate
                for p in pools:
                    if p.app == app:
                        ledger.pool_live[p.name] = p.max_machines
                continue
            count = 0
            for m in machines:
                if not is_live(m.state) or is_idle_slot(m):
                    continue
                count += 1
                owner = by_name.get(m.pool) if m.pool is not None else None
                if owner is not None and owner.app == app:
                    ledger.pool_live[owner.name] = ledger.pool_live.get(owner.name, 0) + 1
            ledger.app_live[app] = count
            ledger.global_live += count
        for p in pools:
            if obs.machines_by_app.get(p.app) is None:
                continue
            extra = max(0, obs.inflight.get(p.name, 0))
            ledger.pool_live[p.name] = ledger.pool_live.get(p.name, 0) + extra
            ledger.app_live[p.app] = ledger.app_live.get(p.app, 0) + extra
            ledger.global_live += extra
        ledger._count_claims(
            obs, pools,
            apps if apps is not None else index_apps(obs, pools),
            claims if claims is not None else index_claims(obs.claims, pools),
        )
        for app in all_apps:
            ledger.budget[app] = max(0, int(obs.create_budget.get(app, 0.0)))
        return ledger

    def _count_claims(
        self,
        obs: Observation,
        pools: Sequence[PoolPolicy],
        apps: Mapping[str, AppIndex],
        claims: ClaimIndex,
    ) -> None:
        """A claim holds a slot of its pool: count the claims whose machine is not listed (or is
        listed under another pool's label, e.g. before a rename) on top of the listing."""
        for p in pools:
            if p.mode != "per-job" or obs.machines_by_app.get(p.app) is None:
                continue  # an unknown app is already at its worst case
            extra = 0
            for c in claims.by_pool.get(p.name, ()):
                known, m = claim_machine(c, p.app, apps)
                if not known or m is None or is_idle_slot(m):
                    extra += 1  # no machine yet, or a warm slot bound and about to start
                elif is_live(m.state) and m.pool != p.name:
                    self.pool_live[p.name] = self.live(p.name) + 1
            self.pool_live[p.name] = self.live(p.name) + extra
            self.app_live[p.app] = self.app_live.get(p.app, 0) + extra
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
    pools holding as many machines, lowest first.
    """

    pool: str
    app: str
    want: int
    free: int = 0
    rank: tuple[float, int] = (0.0, 0)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a pool got: ``count`` machines, ``free`` of them without a create token.

    ``limit`` names what stopped the rest (``"cap_pool"``, ``"cap_app"``, ``"rate_limit"``,
    ``"cap_global"``), ``None`` if the whole request was granted.
    """

    pool: str
    count: int
    free: int
    limit: str | None

    @property
    def creates(self) -> int:
        """Granted units that need a create token."""
        return self.count - self.free


def allocate(requests: Sequence[Request], ledger: Ledger) -> Mapping[str, Grant]:
    """Split the room left in ``ledger`` among ``requests`` fairly; the ledger is not changed."""
    order = sorted(requests, key=lambda r: r.rank)
    rem: dict[str, int] = {}
    free_left: dict[str, int] = {}
    got: dict[str, int] = {}
    got_free: dict[str, int] = {}
    for r in order:
        rem[r.pool] = min(max(0, r.want), ledger.pool_room(r.pool))
        free_left[r.pool] = min(max(0, r.free), rem[r.pool])
        got[r.pool] = 0
        got_free[r.pool] = 0
    app_room = {r.app: ledger.app_room(r.app) for r in order}
    budget = {r.app: ledger.budget.get(r.app, 0) for r in order}
    glob = ledger.global_room()

    def can(r: Request) -> bool:
        return (
            rem[r.pool] > 0
            and glob > 0
            and app_room[r.app] > 0
            and (free_left[r.pool] > 0 or budget[r.app] > 0)
        )

    def give(r: Request, k: int) -> None:
        nonlocal glob
        rem[r.pool] -= k
        got[r.pool] += k
        glob -= k
        app_room[r.app] -= k
        if free_left[r.pool] >= k:
            free_left[r.pool] -= k
            got_free[r.pool] += k
        else:
            budget[r.app] -= k

    # Water-filling on each pool's level (its live machines plus what it got so far): the pools at
    # the lowest level rise together, by whole steps up to the next level or until a room, a budget
    # or a pool's free units run out; single units left over go in rank order (the oldest work).
    # A pool that already holds more of the shared room waits until the others catch up. Steps, not
    # units, so the loop runs O(pools) times however large the room.
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
        for app, n in Counter(r.app for r in lowest).items():
            inc = min(inc, app_room[app] // n)
        for app, n in Counter(r.app for r in lowest if free_left[r.pool] == 0).items():
            inc = min(inc, budget[app] // n)
        for r in lowest:
            if free_left[r.pool] > 0:
                inc = min(inc, free_left[r.pool])
        if inc >= 1:
            for r in lowest:
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
            elif app_room[r.app] <= 0:
                limit = "cap_app"
            elif free_left[r.pool] == 0 and budget[r.app] <= 0:
                limit = "rate_limit"
            else:
                limit = "cap_global"
        grants[r.pool] = Grant(r.pool, got[r.pool], got_free[r.pool], limit)
    return grants
