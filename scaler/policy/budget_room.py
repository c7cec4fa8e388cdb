"""How much each pool may still launch under the cost budgets (see :mod:`scaler.policy.budget`
for what counts as spend). Pure: the spend and prices come in the observation, the time is its
``now``.

:class:`BudgetRoom` holds, per budget scope (global, app, pool), the USD left after what was spent
in the rolling hour and what is committed; :func:`~scaler.policy.caps.allocate` asks it whether a
pool's next launch fits and takes each launch it grants from every scope over the pool.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scaler.policy.budget import Budgets, commit_seconds
from scaler.policy.states import is_live
from scaler.policy.types import Observation, PoolPolicy

if TYPE_CHECKING:
    from scaler.policy.caps import Ledger
    from scaler.policy.index import AppIndex

__all__ = ["BudgetRoom"]

_EPS = 1e-9  # float dust: a launch that lands exactly on the budget fits
_Scope = tuple[str, str]


@dataclass(slots=True)
class BudgetRoom:
    """USD left per scope, and what one more launch of each pool costs.

    Attributes:
        unit: per pool, the USD one launch is priced at (price x its minimum commitment).
        scopes: per pool, the scopes (``("global", "")``, ``("app", app)``, ``("pool", pool)``)
            whose budget applies to it.
        room: per scope, USD left; negative when already over.
        budget: per scope, the budget itself.
        spent: per scope, USD spent in the rolling hour.
        committed: per scope, USD committed by machines launched and not yet run their minimum.
        unknown: the spend could not be read: a pool under any budget launches nothing.
    """

    unit: dict[str, float] = field(default_factory=dict)
    scopes: dict[str, list[_Scope]] = field(default_factory=dict)
    room: dict[_Scope, float] = field(default_factory=dict)
    budget: dict[_Scope, float] = field(default_factory=dict)
    spent: dict[_Scope, float] = field(default_factory=dict)
    committed: dict[_Scope, float] = field(default_factory=dict)
    unknown: bool = False

    @classmethod
    def from_observation(
        cls,
        obs: Observation,
        pools: Sequence[PoolPolicy],
        budgets: Budgets,
        ledger: Ledger,
        apps: Mapping[str, AppIndex],
    ) -> BudgetRoom:
        """Room per scope from the observed spend, the live machines' remaining commitment and
        the launches not listed yet (``ledger`` counts those, as it does for the caps)."""
        out = cls(unknown=obs.spend is None)
        if not budgets.any:
            return out
        spend = obs.spend
        for p in pools:
            applying = budgets.applying(p.name, p.fly_apps)
            out.scopes[p.name] = [(s, n) for s, n, _ in applying]
            price = spend.price_per_s.get(p.name, 0.0) if spend is not None else 0.0
            commit = commit_seconds(p.mode, p.min_lifetime_s)
            out.unit[p.name] = price * commit
            owed = price * _owed_seconds(p, commit, obs.now, ledger, apps)
            for scope, name, usd in applying:
                key = (scope, name)
                if key not in out.budget:
                    out.budget[key] = usd
                    out.spent[key] = spend.spent(scope, name) if spend is not None else 0.0
                    out.committed[key] = 0.0
                out.committed[key] += owed
        for key, usd in out.budget.items():
            out.room[key] = usd - out.spent[key] - out.committed[key]
        return out

    def limits(self, pool: str) -> bool:
        """Whether any budget applies to ``pool``."""
        return bool(self.scopes.get(pool))

    @property
    def reason(self) -> str:
        """The reason of a launch this room refuses: ``budget``, or ``unknown_data`` when the
        spend could not be read."""
        return "unknown_data" if self.unknown else "budget"

    def fits(self, pool: str, k: int = 1) -> bool:
        """Whether ``k`` more launches of ``pool`` stay within every budget over it."""
        if not self.limits(pool):
            return True
        if self.unknown:
            return False
        cost = k * self.unit.get(pool, 0.0)
        return all(cost <= self.room[s] + _EPS for s in self.scopes[pool])

    def step(self, pools: Iterable[str]) -> int:
        """The most launches each of ``pools`` can take at once, all together."""
        cost: dict[_Scope, float] = {}
        for pool in pools:
            if self.limits(pool) and self.unknown:
                return 0
            for s in self.scopes.get(pool, ()):
                cost[s] = cost.get(s, 0.0) + self.unit.get(pool, 0.0)
        inc = sys.maxsize
        for s, c in cost.items():
            if c > 0:
                inc = min(inc, max(0, int((self.room[s] + _EPS) // c)))
        return inc

    def take(self, pool: str, k: int) -> None:
        """Charge ``k`` launches of ``pool`` to every scope over it."""
        for s in self.scopes.get(pool, ()):
            self.room[s] -= k * self.unit.get(pool, 0.0)

    def inputs(self, pool: str) -> dict[str, float | int | str]:
        """The budget figures over ``pool``, for its decision's inputs."""
        out: dict[str, float | int | str] = {}
        for scope, name in self.scopes.get(pool, ()):
            out[f"budget_{scope}_usd"] = round(self.budget[(scope, name)], 4)
            out[f"spent_{scope}_usd"] = round(self.spent[(scope, name)], 4)
            out[f"committed_{scope}_usd"] = round(self.committed[(scope, name)], 4)
        if self.scopes.get(pool):
            out["launch_usd"] = round(self.unit.get(pool, 0.0), 6)
        return out


def _owed_seconds(
    p: PoolPolicy, commit: float, now: float, ledger: Ledger, apps: Mapping[str, AppIndex]
) -> float:
    """Machine-seconds the pool's launched machines will still cost at least: the rest of each
    listed live machine's commitment, and a whole one for each launch no listing shows yet."""
    owed = 0.0
    listed = 0
    listings = (apps[a] for a in p.fly_apps if a in apps)
    for m in (m for idx in listings for m in idx.by_pool.get(p.name, ())):
        if not is_live(m.state):
            continue
        listed += 1
        ran = now - m.started_at if m.started_at is not None else 0.0
        owed += max(0.0, commit - max(0.0, ran))
    return owed + max(0, ledger.live(p.name) - listed) * commit
