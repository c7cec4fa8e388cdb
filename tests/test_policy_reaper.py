"""The reaper's rules, machines of unknown pools, and the allocator's fairness and reasons."""

from __future__ import annotations

import pytest

from scaler.policy import (
    Caps,
    Destroy,
    MachineView,
    MarkOrphan,
    Observation,
    PoolPolicy,
    plan,
)
from scaler.policy.caps import Ledger, Request, allocate
from scaler.policy.reaper import Verdict, orphan_grace, verdict
from scaler.policy.types import DEFAULT_ORPHAN_GRACE_S

NOW = 1_000_000.0
POOL = PoolPolicy("p", "per-job", "app", ("q",), 10, boot_timeout_s=60, max_runtime_s=3600)


def m(state: str, **kw: object) -> MachineView:
    fields: dict[str, object] = {"created_at": NOW - 10, "updated_at": NOW - 10}
    fields.update(kw)
    return MachineView("id1", "n", "app", "p", state, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (m("started", started_at=NOW - 10), None),
        (m("failed"), Verdict("failed", True)),
        (m("stopped"), None),
        (m("destroyed"), None),
        (m("destroying", updated_at=NOW - 10), None),
        (m("destroying", updated_at=NOW - 301), Verdict("stuck", True)),
        (m("replacing", updated_at=NOW - 400), None),
        (m("replacing", updated_at=NOW - 601), Verdict("stuck", True)),
        (m("starting", created_at=NOW - 61), Verdict("boot_timeout", True)),
        (m("created", created_at=NOW - 59), None),
        # A warm machine started again boots from its last state change, not its creation.
        (m("starting", created_at=NOW - 9999, started_at=NOW - 9000, updated_at=NOW - 5), None),
        (m("started", started_at=NOW - 3601), Verdict("max_runtime", True)),
        # Suspended, a machine runs nothing: resting like a stopped one, not timed out (a worker
        # may rest in the suspended tier past max_runtime; a per-job one is reaped as suspended).
        (m("suspended", started_at=NOW - 3601), None),
    ],
)
def test_verdicts(machine: MachineView, expected: Verdict | None) -> None:
    assert verdict(machine, POOL, NOW) == expected


def test_no_max_runtime_means_unlimited() -> None:
    unlimited = PoolPolicy("p", "per-job", "app", ("q",), 10)
    assert verdict(m("started", started_at=0.0), unlimited, NOW) is None


def unknown_pool_obs(*machines: MachineView) -> Observation:
    return Observation(now=NOW, machines_by_app={"app": machines}, create_budget={"app": 5})


def test_machine_of_a_removed_pool_is_marked_then_destroyed() -> None:
    ghost = MachineView("g", "g", "app", "removed-pool", "started", started_at=NOW - 5)
    first = plan(unknown_pool_obs(ghost), [POOL], Caps(10))
    assert first.actions == (MarkOrphan(None, ghost, "unknown_pool"),)
    marked = MachineView(
        "g", "g", "app", None, "started", orphan_marked_at=NOW - POOL.orphan_grace_s
    )
    later = plan(unknown_pool_obs(marked), [POOL], Caps(10))
    assert later.actions == (Destroy(None, marked, "orphan", True),)
    assert later.decisions_for(None)[0].reason == "orphan"


def test_orphan_grace_is_the_longest_of_the_apps_pools_else_the_default() -> None:
    assert orphan_grace("elsewhere", [POOL]) == DEFAULT_ORPHAN_GRACE_S
    longer = PoolPolicy("x", "worker", "app", (), 1, orphan_grace_s=90)
    assert orphan_grace("app", [POOL, longer]) == 90.0
    assert orphan_grace("app", [longer, POOL]) == 90.0


def test_pool_on_another_app_does_not_own_the_machine() -> None:
    wrong_app = MachineView("x", "x", "other-app", "p", "stopped")
    obs = Observation(now=NOW, machines_by_app={"app": (), "other-app": (wrong_app,)})
    assert plan(obs, [POOL], Caps(10)).of_type(Destroy) == (
        Destroy(None, wrong_app, "stopped", False),
    )


def ledger_for(pools: list[PoolPolicy], caps: Caps, budget: dict[str, float]) -> Ledger:
    apps = {p.app: () for p in pools}
    obs = Observation(now=NOW, machines_by_app=apps, create_budget=budget)
    return Ledger.from_observation(obs, pools, caps)


def test_allocation_is_max_min_fair_with_leftover_to_the_oldest_work() -> None:
    pools = [PoolPolicy(n, "per-job", "app", ("q",), 100) for n in "abc"]
    ledger = ledger_for(pools, Caps(10), {"app": 100})
    grants = allocate(
        [
            Request("a", "app", 50, rank=(0.0, 0)),
            Request("b", "app", 2, rank=(0.0, 1)),
            Request("c", "app", 50, rank=(-30.0, 2)),
        ],
        ledger,
    )
    assert {k: g.count for k, g in grants.items()} == {"a": 4, "b": 2, "c": 4}
    assert (grants["a"].limit, grants["b"].limit) == ("cap_global", None)


def test_allocation_names_the_binding_limit() -> None:
    pools = [
        PoolPolicy("small", "per-job", "app", ("q",), 2),
        PoolPolicy("capped", "per-job", "capped-app", ("q",), 50),
        PoolPolicy("slow", "per-job", "slow-app", ("q",), 50),
    ]
    caps = Caps(1000, {"capped-app": 3})
    ledger = ledger_for(pools, caps, {"app": 100, "capped-app": 100, "slow-app": 1})
    grants = allocate(
        [
            Request("small", "app", 5),
            Request("capped", "capped-app", 5),
            Request("slow", "slow-app", 5),
        ],
        ledger,
    )
    assert [(g.count, g.limit) for g in grants.values()] == [
        (2, "cap_pool"),
        (3, "cap_app"),
        (1, "rate_limit"),
    ]


def test_unknown_app_counts_at_its_worst_case_against_the_global_cap() -> None:
    known = PoolPolicy("known", "per-job", "a", ("q",), 10)
    blind = PoolPolicy("blind", "per-job", "b", ("q",), 4)
    obs = Observation(now=NOW, machines_by_app={"a": (), "b": None})
    ledger = Ledger.from_observation(obs, [known, blind], Caps(global_max=6))
    assert ledger.global_room() == 2


def test_bad_pool_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="jobs_per_machine"):
        PoolPolicy("p", "worker", "app", ("q",), 3, jobs_per_machine=0)
    with pytest.raises(ValueError, match="min_machines"):
        PoolPolicy("p", "worker", "app", ("q",), 3, min_machines=4)
    with pytest.raises(ValueError, match="mode"):
        PoolPolicy("p", "elastic", "app", ("q",), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        plan(Observation(now=NOW), [POOL, POOL], Caps(1))


def test_allocation_fills_by_live_machines_not_by_increment() -> None:
    """Under a full global cap a freed slot goes to the pool holding the fewest machines, even when
    another pool ranks first (its work is older): a head start is not kept forever."""
    pools = [PoolPolicy(n, "per-job", f"app-{n}", ("q",), 10) for n in "abc"]
    machines = {
        f"app-{n}": tuple(
            MachineView(f"{n}{i}", f"{n}{i}", f"app-{n}", n, "started") for i in range(k)
        )
        for n, k in (("a", 4), ("b", 1), ("c", 2))
    }
    obs = Observation(now=NOW, machines_by_app=machines,
                      create_budget={a: 100 for a in machines})
    ledger = Ledger.from_observation(obs, pools, Caps(9))
    grants = allocate(
        [
            Request("a", "app-a", 50, rank=(-60.0, 0)),
            Request("b", "app-b", 50, rank=(0.0, 1)),
            Request("c", "app-c", 50, rank=(-30.0, 2)),
        ],
        ledger,
    )
    # 2 free slots: b (1 live) first, then b and c tie at 2 and c's work is older.
    assert {k: g.count for k, g in grants.items()} == {"a": 0, "b": 1, "c": 1}
    assert grants["a"].limit == "cap_global"
