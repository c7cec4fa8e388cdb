"""Worker pools: desired count from depth, latency or a metric; warm starts before creates."""

from __future__ import annotations

import pytest

from scaler.policy import (
    Caps,
    Create,
    Destroy,
    MachineView,
    Observation,
    Plan,
    PoolPolicy,
    QueueView,
    Start,
    plan,
)

NOW = 5_000.0


def pool(**kw: object) -> PoolPolicy:
    fields: dict[str, object] = {"max_machines": 10, "jobs_per_machine": 2, "warm_machines": 1}
    fields.update(kw)
    return PoolPolicy("w", "worker", "w-app", ("jobs",), **fields)  # type: ignore[arg-type]


def worker(mid: str, state: str = "started", updated_at: float = NOW - 100) -> MachineView:
    started = NOW - 100 if state == "started" else None
    return MachineView(
        mid,
        mid,
        "w-app",
        "w",
        state,
        created_at=NOW - 1000,
        updated_at=updated_at,
        started_at=started,
    )


def observe(
    queue: QueueView | None,
    machines: tuple[MachineView, ...] = (),
    budget: float = 100,
    metric: float | None = None,
) -> Observation:
    return Observation(
        now=NOW,
        queues={"jobs": queue},
        machines_by_app={"w-app": machines},
        create_budget={"w-app": budget},
        metric_values={"w": metric},
    )


def run(obs: Observation, p: PoolPolicy | None = None, caps: Caps | None = None) -> Plan:
    return plan(obs, [p or pool()], caps or Caps(1000))


@pytest.mark.parametrize(
    ("ready", "in_flight", "due", "expected"),
    [(0, 0, 0, 0), (1, 0, 0, 1), (4, 1, 0, 3), (0, 0, 3, 2), (100, 0, 0, 10)],
)
def test_depth_desired_is_work_over_jobs_per_machine_clamped(
    ready: int, in_flight: int, due: int, expected: int
) -> None:
    q = QueueView("jobs", ready, in_flight=in_flight, delayed_due=due)
    assert run(observe(q)).desired["w"] == expected


def test_min_machines_is_a_floor() -> None:
    assert run(observe(QueueView("jobs", 0)), pool(min_machines=2)).desired["w"] == 2


def test_starts_warm_machines_before_creating() -> None:
    warm = (worker("a", "stopped", NOW - 50), worker("b", "stopped", NOW - 10))
    p = run(observe(QueueView("jobs", 8), warm))
    assert [a.machine.id for a in p.of_type(Start)] == ["b", "a"]
    assert p.of_type(Create) == (Create("w", "w-app", 2),)
    assert p.of_type(Destroy) == ()


def test_starts_need_no_create_budget() -> None:
    warm = (worker("a", "stopped"),)
    p = run(observe(QueueView("jobs", 4), warm, budget=0))
    assert len(p.of_type(Start)) == 1
    assert p.of_type(Create) == ()
    assert [(d.kind, d.reason, d.count) for d in p.not_taken()] == [("create", "rate_limit", 1)]


def test_stopped_machines_beyond_warm_are_destroyed() -> None:
    stopped = tuple(worker(f"s{i}", "stopped", NOW - i) for i in range(3))
    p = run(observe(QueueView("jobs", 0), stopped))
    assert [(a.machine.id, a.reason, a.force) for a in p.of_type(Destroy)] == [
        ("s1", "stopped", False),
        ("s2", "stopped", False),
    ]


def test_started_workers_are_never_killed_to_scale_down() -> None:
    busy = tuple(worker(f"m{i}") for i in range(5))
    p = run(observe(QueueView("jobs", 0), busy))
    assert p.actions == ()
    assert p.desired["w"] == 0


def test_unknown_queue_holds_and_keeps_warm_machines() -> None:
    machines = (worker("m1"), worker("m2"), worker("s1", "stopped"), worker("s2", "stopped"))
    p = run(observe(None, machines))
    assert p.actions == ()
    assert p.desired["w"] == 2
    assert ("scale", "unknown_data") in {(d.kind, d.reason) for d in p.decisions}


def test_unknown_metric_never_lowers_desired() -> None:
    p = run(
        observe(QueueView("jobs", 0), (worker("m1"), worker("m2"))), pool(scale_on="prometheus")
    )
    assert p.desired["w"] == 2
    assert p.actions == ()


def test_prometheus_desired_is_value_over_target() -> None:
    p = run(
        observe(QueueView("jobs", 0), metric=7.5), pool(scale_on="prometheus", target_per_machine=2)
    )
    assert p.desired["w"] == 4
    assert p.of_type(Create) == (Create("w", "w-app", 4),)


def test_latency_scales_up_while_oldest_is_too_old() -> None:
    q = QueueView("jobs", 50, oldest_ready_age_s=90)
    machines = (worker("m1"), worker("m2"))
    p = run(observe(q, machines), pool(scale_on="latency", target_latency_s=30))
    assert p.desired["w"] == 6


def test_latency_holds_when_on_target_and_starts_one_from_zero() -> None:
    on_target = QueueView("jobs", 50, oldest_ready_age_s=10)
    lat = pool(scale_on="latency", target_latency_s=30)
    assert run(observe(on_target, (worker("m1"),)), lat).desired["w"] == 1
    assert run(observe(on_target), lat).desired["w"] == 1
    assert run(observe(QueueView("jobs", 0), (worker("m1"),)), lat).desired["w"] == 0


def test_failed_and_stuck_workers_are_reaped() -> None:
    failed = worker("f", "failed")
    stuck = worker("s", "stopping", updated_at=NOW - 301)
    p = run(observe(QueueView("jobs", 0), (failed, stuck)))
    assert [(a.machine.id, a.reason, a.force) for a in p.of_type(Destroy)] == [
        ("f", "failed", True),
        ("s", "stuck", True),
    ]


def test_global_cap_is_shared_fairly_between_worker_pools() -> None:
    a = PoolPolicy("a", "worker", "app-a", ("qa",), 100)
    b = PoolPolicy("b", "worker", "app-b", ("qb",), 100)
    obs = Observation(
        now=NOW,
        queues={"qa": QueueView("qa", 1000), "qb": QueueView("qb", 3)},
        machines_by_app={"app-a": (), "app-b": ()},
        create_budget={"app-a": 100, "app-b": 100},
    )
    p = plan(obs, [a, b], Caps(global_max=10))
    assert {c.pool: c.count for c in p.of_type(Create)} == {"a": 7, "b": 3}
    (limited,) = p.not_taken()
    assert (limited.pool, limited.reason) == ("a", "cap_global")


def test_a_demand_within_the_tolerance_holds_and_a_surge_does_not() -> None:
    # 2 machines of 5 jobs each: 11 jobs is 10 % over target, and used to buy a third machine on
    # every swing between 10 and 11 (which then idled out); beyond 10 % it scales at once.
    p = pool(jobs_per_machine=5, warm_machines=0)
    fleet = (worker("m1"), worker("m2"))
    held = run(observe(QueueView("jobs", 3, in_flight=8), fleet), p)
    assert held.desired["w"] == 2 and held.of_type(Create) == ()
    assert run(observe(QueueView("jobs", 4, in_flight=8), fleet), p).desired["w"] == 3
    assert run(observe(QueueView("jobs", 20, in_flight=10), fleet), p).desired["w"] == 6
    # from zero any work starts a machine; a tolerance of 0 scales on the first job over
    assert run(observe(QueueView("jobs", 1)), p).desired["w"] == 1
    strict = pool(jobs_per_machine=5, warm_machines=0, scale_tolerance=0.0)
    assert run(observe(QueueView("jobs", 3, in_flight=8), fleet), strict).desired["w"] == 3
