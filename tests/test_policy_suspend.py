"""The suspended tier of worker pools (``warm_suspended``): suspended machines are started before
stopped ones, which are started before anything is created; idle workers the pool does not need
are suspended, up to the tier's size; per-job pools never suspend."""

from __future__ import annotations

from dataclasses import replace

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
    Suspend,
    plan,
)
from scaler.policy.states import is_live

NOW = 5_000.0


def pool(**kw: object) -> PoolPolicy:
    fields: dict[str, object] = {
        "max_machines": 10, "jobs_per_machine": 1, "warm_machines": 2, "warm_suspended": 2,
    }
    fields.update(kw)
    return PoolPolicy("w", "worker", "w-app", ("jobs",), **fields)  # type: ignore[arg-type]


def worker(mid: str, state: str = "started", updated_at: float = NOW - 100,
           idle_since: float | None = None) -> MachineView:
    return MachineView(
        mid, mid, "w-app", "w", state, created_at=NOW - 1000, updated_at=updated_at,
        started_at=NOW - 100 if state == "started" else None, idle_since=idle_since,
    )


def run(ready: int, machines: tuple[MachineView, ...], p: PoolPolicy | None = None,
        budget: float = 100, in_flight: int = 0) -> Plan:
    obs = Observation(
        now=NOW,
        queues={"jobs": QueueView("jobs", ready, in_flight=in_flight)},
        machines_by_app={"w-app": machines},
        create_budget={"w-app": budget},
    )
    return plan(obs, [p or pool()], Caps(1000))


def test_suspended_then_stopped_then_create() -> None:
    machines = (
        worker("stop-old", "stopped", NOW - 90), worker("susp-old", "suspended", NOW - 80),
        worker("stop-new", "stopped", NOW - 5), worker("susp-new", "suspended", NOW - 10),
    )
    p = run(3, machines)
    assert [a.machine.id for a in p.of_type(Start)] == ["susp-new", "susp-old", "stop-new"]
    assert p.of_type(Create) == ()
    p = run(6, machines)
    assert [a.machine.id for a in p.of_type(Start)] == [
        "susp-new", "susp-old", "stop-new", "stop-old",
    ]
    assert sum(a.count for a in p.of_type(Create)) == 2


def test_a_resume_needs_room_like_a_start() -> None:
    # A suspended machine is not live (it runs nothing): starting it takes room under the cap.
    assert not is_live("suspended")
    running = tuple(worker(f"r{i}") for i in range(2))
    p = run(5, (*running, worker("s", "suspended")), pool(max_machines=3))
    assert [a.machine.id for a in p.of_type(Start)] == ["s"]
    assert p.of_type(Create) == ()


def test_idle_workers_not_needed_are_suspended_up_to_the_tier() -> None:
    idle = tuple(worker(f"i{k}", idle_since=NOW - 10 + k) for k in range(4))
    p = run(0, idle)
    # Longest idle first, at most warm_suspended.
    assert [a.machine.id for a in p.of_type(Suspend)] == ["i0", "i1"]
    # One machine already suspended: room for one more.
    p = run(0, (*idle, worker("s", "suspended")))
    assert [a.machine.id for a in p.of_type(Suspend)] == ["i0"]


def test_workers_still_needed_or_not_idle_are_not_suspended() -> None:
    busy = worker("busy")
    idle = worker("idle", idle_since=NOW - 5)
    # Two machines of work for two live workers: nothing to spare.
    assert run(2, (busy, idle)).of_type(Suspend) == ()
    # One job in flight on busy: the idle one is spare.
    assert [a.machine.id for a in run(0, (busy, idle), in_flight=1).of_type(Suspend)] == ["idle"]
    # A worker that never said it is idle is left alone (it may be consuming).
    assert run(0, (busy,)).of_type(Suspend) == ()


def test_no_tier_no_suspend() -> None:
    idle = (worker("idle", idle_since=NOW - 5),)
    assert run(0, idle, pool(warm_suspended=0)).of_type(Suspend) == ()


def test_extra_suspended_machines_are_destroyed() -> None:
    machines = tuple(worker(f"s{k}", "suspended", NOW - k) for k in range(3))
    p = run(0, machines, pool(warm_suspended=1))
    assert sorted(a.machine.id for a in p.of_type(Destroy)) == ["s1", "s2"]
    assert all(a.reason == "suspended" and not a.force for a in p.of_type(Destroy))
    # The stopped tier is counted on its own.
    p = run(0, (*machines, worker("x", "stopped")), pool(warm_suspended=3, warm_machines=0))
    assert [a.machine.id for a in p.of_type(Destroy)] == ["x"]


def test_a_suspended_worker_is_not_timed_out_while_it_rests() -> None:
    old = replace(worker("s", "suspended"), started_at=NOW - 10_000)
    p = run(0, (old,), pool(max_runtime_s=600))
    assert p.of_type(Destroy) == ()


def test_per_job_pools_never_suspend() -> None:
    with pytest.raises(ValueError, match="per-job machines never suspend"):
        PoolPolicy("j", "per-job", "a", ("q",), max_machines=3, warm_suspended=1)
