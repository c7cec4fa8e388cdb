"""Cost budgets in the planner: launches that would push the rolling hour's spend past a budget
(global, app, pool) wait with reason ``budget``; committed launches count; worker pools too."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.policy import (
    Budgets,
    Caps,
    ClaimView,
    Create,
    Launch,
    MachineView,
    Observation,
    Plan,
    PoolPolicy,
    QueueView,
    Spend,
    Start,
    plan,
)
from scaler.policy.budget import LAUNCH_COMMIT_S

NOW = 10_000.0
PRICE = 0.001  # USD per second: one per-job launch is priced at 0.06
UNIT = PRICE * LAUNCH_COMMIT_S


def perjob(name: str = "a", app: str = "app-a", queue: str = "qa") -> PoolPolicy:
    return PoolPolicy(name, "per-job", app, (queue,), max_machines=50)


def obs(
    ready: dict[str, int],
    spend: Spend | None,
    machines: dict[str, tuple[MachineView, ...]] | None = None,
    now: float = NOW,
    inflight: dict[str, int] | None = None,
    claims: dict[str, tuple[ClaimView, ...]] | None = None,
) -> Observation:
    apps = machines if machines is not None else {"app-a": (), "app-b": ()}
    return Observation(
        now=now,
        queues={q: QueueView(q, n) for q, n in ready.items()},
        machines_by_app=apps,
        claims=claims or {},
        inflight=inflight or {},
        create_budget=dict.fromkeys(apps, 1000.0),
        spend=spend,
    )


def spend(total: float = 0.0, **kw: object) -> Spend:
    prices = {"a": PRICE, "b": PRICE, "w": PRICE}
    return Spend(total=total, price_per_s=prices, **kw)  # type: ignore[arg-type]


def launched(p: Plan, pool: str = "a") -> int:
    return sum(a.count for a in p.of_type(Launch) if a.pool == pool)


def refused(p: Plan, pool: str = "a", kind: str = "launch") -> int:
    return sum(
        d.count for d in p.decisions_for(pool)
        if d.outcome == "not_taken" and d.reason == "budget" and d.kind == kind
    )


@pytest.mark.parametrize(
    ("budget", "expected"), [(0.12 + 3 * UNIT, 3), (0.12 + 3 * UNIT - 1e-6, 2)]
)
def test_global_budget_refuses_at_the_boundary(budget: float, expected: int) -> None:
    p = plan(obs({"qa": 10}, spend(0.12)), [perjob()], Caps(100, budgets=Budgets(budget)))
    assert launched(p) == expected
    assert refused(p) == 10 - expected
    d = next(d for d in p.decisions_for("a") if d.reason == "budget")
    assert d.inputs["spent_global_usd"] == pytest.approx(0.12)
    assert "cost budget" in d.message


def test_no_budget_no_limit_and_spend_unknown_refuses_only_budgeted_pools() -> None:
    pools = [perjob(), perjob("b", "app-b", "qb")]
    p = plan(obs({"qa": 4, "qb": 4}, None), pools, Caps(100))
    assert launched(p) == 4 and launched(p, "b") == 4
    caps = Caps(100, budgets=Budgets(per_pool={"a": 10.0}))
    p = plan(obs({"qa": 4, "qb": 4}, None), pools, caps)
    assert launched(p) == 0 and launched(p, "b") == 4
    assert any(d.reason == "unknown_data" and d.count == 4 for d in p.decisions_for("a"))


def test_app_budget_limits_only_that_app() -> None:
    pools = [perjob(), perjob("b", "app-b", "qb")]
    caps = Caps(100, budgets=Budgets(per_app={"app-a": 0.5 + 2 * UNIT}))
    s = spend(5.0, by_app={"app-a": 0.5, "app-b": 4.5})
    p = plan(obs({"qa": 5, "qb": 5}, s), pools, caps)
    assert launched(p) == 2 and refused(p) == 3
    assert launched(p, "b") == 5 and refused(p, "b") == 0


def test_pool_budget_and_global_budget_both_apply() -> None:
    pools = [perjob(), perjob("b", "app-b", "qb")]
    budgets = Budgets(global_usd=6 * UNIT, per_pool={"a": UNIT})
    p = plan(obs({"qa": 5, "qb": 5}, spend()), pools, Caps(100, budgets=budgets))
    assert launched(p) == 1
    assert launched(p, "b") == 5  # the global budget's other five units
    assert refused(p) == 4 and refused(p, "b") == 0


def test_shared_budget_is_split_fairly() -> None:
    pools = [perjob(), perjob("b", "app-b", "qb")]
    p = plan(obs({"qa": 10, "qb": 10}, spend()), pools, Caps(100, budgets=Budgets(4 * UNIT)))
    assert launched(p) == 2 and launched(p, "b") == 2


def test_committed_launches_count() -> None:
    """Unlisted launches (in flight, claims without a machine) owe a whole commitment; a listed
    machine that has run 20 s owes the other 40 s; one past its minute owes nothing."""
    young = MachineView("m1", "a-j1-1", "app-a", "a", "started", started_at=NOW - 20)
    old = MachineView("m2", "a-j2-1", "app-a", "a", "started", started_at=NOW - 600)
    claim = ClaimView("qa", "j3", "m3", "a", 1, NOW - 1, "a-j3-1")
    committed = 2 * UNIT + PRICE * 40  # one in flight, one claim, and the young machine
    budget = committed + 2 * UNIT
    p = plan(
        obs({"qa": 10}, spend(), machines={"app-a": (young, old)}, inflight={"a": 1},
            claims={"qa": (claim,)}),
        [perjob()], Caps(100, budgets=Budgets(budget)),
    )
    assert launched(p) == 2
    d = next(d for d in p.decisions_for("a") if d.reason == "budget")
    assert d.inputs["committed_global_usd"] == pytest.approx(committed)


def test_a_machine_in_a_pools_second_app_owes_only_its_own_commitment() -> None:
    """A pool over two apps: its old machine listed in the second app is listed, so it owes
    nothing more, not the whole minute of a launch no listing shows."""
    old = MachineView("m2", "a-j2-1", "app-b", "a", "started", started_at=NOW - 600)
    pool = PoolPolicy("a", "per-job", "app-a", ("qa",), max_machines=50,
                      apps=("app-a", "app-b"))
    p = plan(obs({"qa": 10}, spend(), machines={"app-a": (), "app-b": (old,)}),
             [pool], Caps(100, budgets=Budgets(2 * UNIT)))
    assert launched(p) == 2


def test_commitment_runs_out_as_time_passes() -> None:
    """The same machines observed 40 s later owe nothing more: a launch fits again."""
    m = MachineView("m1", "a-j1-1", "app-a", "a", "started", started_at=NOW - 20)
    caps = Caps(100, budgets=Budgets(UNIT + 0.01))
    early = plan(obs({"qa": 1}, spend(0.01), {"app-a": (m,)}), [perjob()], caps)
    later = plan(obs({"qa": 1}, spend(0.01), {"app-a": (m,)}, now=NOW + 40), [perjob()], caps)
    assert launched(early) == 0 and refused(early) == 1
    assert launched(later) == 1


def test_spend_falling_out_of_the_hour_resumes_launches() -> None:
    caps = Caps(100, budgets=Budgets(1.0))
    assert launched(plan(obs({"qa": 3}, spend(1.0)), [perjob()], caps)) == 0
    assert launched(plan(obs({"qa": 3}, spend(0.9)), [perjob()], caps)) == 1
    assert launched(plan(obs({"qa": 3}, spend(0.0)), [perjob()], caps)) == 3


def test_worker_starts_and_creates_are_refused_and_priced_at_min_lifetime() -> None:
    w = PoolPolicy("w", "worker", "app-w", ("qw",), max_machines=10, warm_machines=2,
                   min_lifetime_s=600.0)
    stopped = tuple(
        MachineView(f"s{i}", f"s{i}", "app-w", "w", "stopped") for i in range(2)
    )
    unit = PRICE * 600
    caps = Caps(100, budgets=Budgets(3 * unit))
    o = Observation(
        now=NOW, queues={"qw": QueueView("qw", 5)}, machines_by_app={"app-w": stopped},
        create_budget={"app-w": 100.0}, spend=spend(),
    )
    p = plan(o, [w], caps)
    assert len(p.of_type(Start)) == 2
    assert sum(a.count for a in p.of_type(Create)) == 1
    assert refused(p, "w", "create") == 2
    p = plan(o, [w], Caps(100, budgets=Budgets(unit - 0.01)))
    assert not p.of_type(Start) and not p.of_type(Create)
    assert refused(p, "w", "create") == 5


def test_budgets_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="global is 0"):
        Budgets(0.0)
    with pytest.raises(ValueError, match=r"per_app\['x'\] is -1"):
        Budgets(per_app={"x": -1.0})


@settings(max_examples=150, deadline=None)
@given(
    ready=st.tuples(st.integers(0, 30), st.integers(0, 30)),
    spent=st.tuples(st.floats(0, 2), st.floats(0, 2)),
    price=st.tuples(st.floats(0.0001, 0.01), st.floats(0.0001, 0.01)),
    budgets=st.tuples(
        st.one_of(st.none(), st.floats(0.01, 5)), st.one_of(st.none(), st.floats(0.01, 5)),
        st.one_of(st.none(), st.floats(0.01, 5)),
    ),
    inflight=st.integers(0, 3),
)
def test_property_spend_plus_committed_never_exceeds_a_budget(
    ready: tuple[int, int], spent: tuple[float, float], price: tuple[float, float],
    budgets: tuple[float | None, float | None, float | None], inflight: int,
) -> None:
    """At every plan, spent + committed + what it launches stays within each budget that had
    room, and a budget already over launches nothing."""
    pools = [perjob(), perjob("b", "app-b", "qb")]
    glob, app_a, pool_b = budgets
    b = Budgets(glob, {"app-a": app_a} if app_a else {}, {"b": pool_b} if pool_b else {})
    s = Spend(sum(spent), {"app-a": spent[0], "app-b": spent[1]}, {"a": spent[0], "b": spent[1]},
              {"a": price[0], "b": price[1]})
    p = plan(obs({"qa": ready[0], "qb": ready[1]}, s, inflight={"a": inflight}), pools,
             Caps(1000, budgets=b))
    cost = {n: launched(p, n) * price[i] * LAUNCH_COMMIT_S for i, n in enumerate("ab")}
    committed_a = inflight * price[0] * LAUNCH_COMMIT_S
    checks = []
    if glob is not None:
        checks.append((glob, sum(spent) + committed_a, cost["a"] + cost["b"]))
    if app_a is not None:
        checks.append((app_a, spent[0] + committed_a, cost["a"]))
    if pool_b is not None:
        checks.append((pool_b, spent[1], cost["b"]))
    for budget, before, added in checks:
        if before >= budget:
            assert added == 0
        else:
            assert before + added <= budget + 1e-6


def test_a_pool_over_several_apps_is_under_each_of_its_apps_budgets() -> None:
    """The app a launch lands in is chosen at create time: every app's budget holds anyway."""
    both = PoolPolicy("a", "per-job", "app-a", ("qa",), max_machines=50,
                      apps=("app-a", "app-b"))
    caps = Caps(100, budgets=Budgets(per_app={"app-b": 0.5 + 2 * UNIT}))
    s = spend(0.5, by_app={"app-b": 0.5})
    p = plan(obs({"qa": 5}, s), [both], caps)
    assert launched(p) == 2 and refused(p) == 3
