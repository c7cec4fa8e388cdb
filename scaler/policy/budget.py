"""Cost budgets: what the operator allows per rolling hour, and what the observer says was spent.

The vocabulary only (no policy here, and no import of the other policy modules, so
:mod:`scaler.policy.types` can carry it); :mod:`scaler.policy.budget_room` applies it.

What counts against a budget, per scope (global, app, pool):

- **spent**: started machines' price x time within the rolling hour, including machines that ran
  and are gone (the loop's spend ledger, shared in Redis, supplies it as :class:`Spend`);
- **committed**: what machines already launched will cost at least: each live machine of a pool
  that has run less than its minimum commitment (see :func:`commit_seconds`) adds the rest of it,
  and a launch not listed yet (in flight, or a claim whose machine is not visible) adds all of it;
- **asked**: each new launch (per-job Launch, worker Start or Create) adds its pool's price x its
  minimum commitment.

A launch is refused (``not_taken``, reason ``budget``) when spent + committed + asked would exceed
any budget that applies. Running machines are never stopped for a budget, and relaunches of jobs
already claimed are not refused (their spend is already committed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["LAUNCH_COMMIT_S", "WINDOW_S", "Budgets", "Spend", "commit_seconds"]

WINDOW_S = 3600.0
"""The rolling window every budget is counted over."""

LAUNCH_COMMIT_S = 60.0
"""The least machine time a launch is priced at: a machine that is created boots, runs its job
(or idles) and exits; a minute is a floor below which few per-job jobs finish once boot is
counted. Fly itself bills by the second, with no minimum."""


def _empty() -> Mapping[str, float]:
    return {}


def commit_seconds(mode: str, min_lifetime_s: float) -> float:
    """The machine time one launch of a pool is priced at: a worker does not exit idle before its
    ``min_lifetime``, so a worker launch commits at least that; a per-job launch a minute."""
    if mode == "worker":
        return max(LAUNCH_COMMIT_S, min_lifetime_s)
    return LAUNCH_COMMIT_S


@dataclass(frozen=True, slots=True)
class Budgets:
    """USD per rolling hour allowed per scope; ``None`` or absent: no budget for that scope.

    Attributes:
        global_usd: across every app.
        per_app: per Fly app.
        per_pool: per pool name.
    """

    global_usd: float | None = None
    per_app: Mapping[str, float] = field(default_factory=_empty)
    per_pool: Mapping[str, float] = field(default_factory=_empty)

    def __post_init__(self) -> None:
        scopes = [("global", self.global_usd)]
        scopes += [(f"per_app[{k!r}]", v) for k, v in self.per_app.items()]
        scopes += [(f"per_pool[{k!r}]", v) for k, v in self.per_pool.items()]
        for name, value in scopes:
            if value is not None and not value > 0:
                raise ValueError(
                    f"budgets: {name} is {value!r}; use a positive USD amount, or no budget"
                )

    @property
    def any(self) -> bool:
        """Whether any budget is set."""
        return self.global_usd is not None or bool(self.per_app) or bool(self.per_pool)

    def applying(self, pool: str, apps: Sequence[str]) -> list[tuple[str, str, float]]:
        """The budgets over one pool, as (scope, name, USD): global, its apps', its own.

        A pool over several apps is under every one of its apps' budgets: its launch is charged
        to each, as the app a machine lands in is chosen only when it is created (never more
        than any app's budget, at the price of launching less under a tight one)."""
        out: list[tuple[str, str, float]] = []
        if self.global_usd is not None:
            out.append(("global", "", self.global_usd))
        out += [("app", app, self.per_app[app]) for app in apps if app in self.per_app]
        if pool in self.per_pool:
            out.append(("pool", pool, self.per_pool[pool]))
        return out


@dataclass(frozen=True, slots=True)
class Spend:
    """What the observer read: USD spent within the rolling hour ending at the observation's
    ``now``, and the price of one machine of each pool.

    Attributes:
        total: across every app (machines of unknown pools included).
        by_app: per Fly app.
        by_pool: per pool name.
        price_per_s: per pool, USD per second of one of its machines (its configured size).
    """

    total: float = 0.0
    by_app: Mapping[str, float] = field(default_factory=_empty)
    by_pool: Mapping[str, float] = field(default_factory=_empty)
    price_per_s: Mapping[str, float] = field(default_factory=_empty)

    def spent(self, scope: str, name: str) -> float:
        """USD spent in one scope (``"global"``, ``"app"``, ``"pool"``)."""
        if scope == "global":
            return self.total
        table = self.by_app if scope == "app" else self.by_pool
        return table.get(name, 0.0)
