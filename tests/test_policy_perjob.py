"""Per-job pools: launches, claims and their machines (README invariants 1, 2, 4, 5, 6, 7)."""

from __future__ import annotations

import pytest

from scaler.policy import (
    AwaitExit,
    Caps,
    ClaimView,
    DeadLetter,
    Destroy,
    Launch,
    MachineView,
    MarkOrphan,
    Observation,
    Plan,
    PoolPolicy,
    QueueView,
    Relaunch,
    RequeueOrDeadLetter,
    plan,
)

NOW = 10_000.0
POOL = PoolPolicy(
    "thumbs",
    "per-job",
    "thumbs-app",
    ("thumbs",),
    max_machines=20,
    boot_timeout_s=120,
    max_runtime_s=600,
    max_launches=3,
    orphan_grace_s=60,
    claim_grace_s=30,
)


def machine(mid: str, state: str = "started", job: str | None = "j1", **kw: object) -> MachineView:
    fields: dict[str, object] = {
        "name": f"thumbs-{job}-1",
        "app": "thumbs-app",
        "pool": "thumbs",
        "state": state,
        "created_at": NOW - 50,
        "updated_at": NOW - 40,
        "job": job,
        "queue": "thumbs",
        "launch": 1,
        "started_at": NOW - 40 if state == "started" else None,
    }
    fields.update(kw)
    return MachineView(id=mid, **fields)  # type: ignore[arg-type]


def claim(job: str = "j1", **kw: object) -> ClaimView:
    fields: dict[str, object] = {
        "queue": "thumbs",
        "message_id": f"msg-{job}",
        "pool": "thumbs",
        "launch": 1,
        "claimed_at": NOW - 60,
        "machine_name": f"thumbs-{job}-1",
        "state": "running",
    }
    fields.update(kw)
    return ClaimView(job=job, **fields)  # type: ignore[arg-type]


def observe(
    ready: int = 0,
    machines: tuple[MachineView, ...] | None = (),
    claims: tuple[ClaimView, ...] | None = (),
    budget: float = 100,
    inflight: int = 0,
    queue: QueueView | str | None = "default",
) -> Observation:
    qv = QueueView("thumbs", ready, oldest_ready_age_s=3.0) if queue == "default" else queue
    return Observation(
        now=NOW,
        queues={"thumbs": qv},  # type: ignore[dict-item]
        machines_by_app={"thumbs-app": machines},
        claims={"thumbs": claims},
        inflight={"thumbs": inflight},
        create_budget={"thumbs-app": budget},
    )


def run(obs: Observation, pool: PoolPolicy = POOL, caps: Caps | None = None) -> Plan:
    return plan(obs, [pool], caps or Caps(global_max=1000))


def test_launches_one_machine_per_ready_message() -> None:
    p = run(observe(ready=5))
    assert p.of_type(Launch) == (Launch("thumbs", "thumbs-app", "thumbs", 5),)
    (d,) = [d for d in p.decisions if d.kind == "launch"]
    assert (d.outcome, d.count, d.inputs["ready"]) == ("acted", 5, 5)
    assert p.desired["thumbs"] == 5


def test_pool_cap_counts_booting_machines_and_inflight_launches() -> None:
    booting = tuple(machine(f"m{i}", "starting", job=f"j{i}", started_at=None) for i in range(15))
    claims = tuple(claim(f"j{i}", state="claimed", machine_id=f"m{i}") for i in range(15))
    p = run(observe(ready=12, machines=booting, claims=claims, inflight=3))
    assert sum(a.count for a in p.of_type(Launch)) == 2
    not_taken = [d for d in p.not_taken() if d.kind == "launch"]
    assert [(d.reason, d.count) for d in not_taken] == [("cap_pool", 10)]
    assert "20 live of cap 20" not in not_taken[0].message
    assert "18 live of cap 20" in not_taken[0].message


def test_create_budget_limits_launches_and_says_rate_limit() -> None:
    p = run(observe(ready=10, budget=2.9))
    assert sum(a.count for a in p.of_type(Launch)) == 2
    assert [(d.reason, d.count) for d in p.not_taken()] == [("rate_limit", 8)]


def test_unknown_queue_means_no_launch() -> None:
    p = run(observe(queue=None))
    assert p.of_type(Launch) == ()
    assert [d.reason for d in p.decisions_for("thumbs")] == ["unknown_data"]


def test_unreadable_claims_mean_no_launch() -> None:
    p = run(observe(ready=4, claims=None))
    assert p.of_type(Launch) == ()
    assert "unknown_data" in {d.reason for d in p.decisions_for("thumbs")}


def test_unknown_app_listing_means_no_action_at_all() -> None:
    old = claim("j1", claimed_at=NOW - 1000, machine_id="gone")
    p = run(observe(ready=4, machines=None, claims=(old,)))
    assert p.actions == ()
    decided = {(d.kind, d.reason, d.count) for d in p.decisions_for("thumbs")}
    # the pool is skipped, and its claim waits: its machine is unknown, not gone
    assert decided == {("skip", "unknown_data", 0), ("wait", "unknown_data", 1)}


def test_healthy_claimed_machine_is_left_alone() -> None:
    p = run(observe(machines=(machine("m1"),), claims=(claim("j1", machine_id="m1"),)))
    assert p.actions == ()
    assert [d.reason for d in p.decisions_for("thumbs")] == ["no_demand"]


def test_claim_without_machine_within_grace_waits() -> None:
    fresh = claim("j1", state="claimed", claimed_at=NOW - 5)
    p = run(observe(claims=(fresh,)))
    assert p.actions == ()
    assert ("wait", "claim_grace") in {(d.kind, d.reason) for d in p.decisions}


def test_claim_that_lost_its_create_is_relaunched_under_the_same_name() -> None:
    lost = claim("j1", state="claimed", claimed_at=NOW - 100)
    p = run(observe(claims=(lost,)))
    assert p.of_type(Relaunch) == (Relaunch("thumbs", "thumbs-app", lost),)


def test_relaunch_respects_budget() -> None:
    lost = claim("j1", state="claimed", claimed_at=NOW - 100)
    p = run(observe(claims=(lost,), budget=0))
    assert p.of_type(Relaunch) == ()
    assert ("relaunch", "rate_limit") in {(d.kind, d.reason) for d in p.not_taken()}


def test_never_relaunch_when_the_machine_is_visible_by_name() -> None:
    lost = claim("j1", state="claimed", claimed_at=NOW - 100)
    p = run(observe(machines=(machine("m1", "starting", started_at=None),), claims=(lost,)))
    assert p.of_type(Relaunch) == ()
    assert p.actions == ()


def test_machine_gone_without_ack_requeues_after_grace() -> None:
    c = claim("j1", machine_id="m-vanished")
    p = run(observe(claims=(c,)))
    # The machine may only be missing from a lagging listing: it is destroyed before the job
    # goes back, so it cannot run the job beside the next launch.
    (d,) = p.of_type(Destroy)
    assert (d.machine.id, d.reason, d.force) == ("m-vanished", "unlisted", True)
    assert p.of_type(RequeueOrDeadLetter) == (
        RequeueOrDeadLetter("thumbs", c, "machine_gone", max_launches=3,
                            requires_destroy="m-vanished"),
    )


def test_recently_updated_claim_gets_a_fresh_grace() -> None:
    c = claim("j1", machine_id="m-new", claimed_at=NOW - 500, updated_at=NOW - 2)
    assert run(observe(claims=(c,))).actions == ()


def test_destroyed_machine_requeues_its_claim() -> None:
    c = claim("j1", machine_id="m1")
    p = run(observe(machines=(machine("m1", "destroyed"),), claims=(c,)))
    assert [(type(a).__name__, a.reason) for a in p.actions] == [
        ("RequeueOrDeadLetter", "machine_gone")
    ]


def test_stopped_machine_with_claim_is_destroyed_then_its_job_released() -> None:
    c = claim("j1", machine_id="m1")
    m = machine("m1", "stopped")
    p = run(observe(machines=(m,), claims=(c,)))
    assert p.actions == (
        Destroy("thumbs", m, "stopped", False),
        RequeueOrDeadLetter("thumbs", c, "stopped", 3, requires_destroy="m1"),
    )


def test_boot_timeout_destroys_and_counts_as_a_failed_launch() -> None:
    c = claim("j1", state="claimed", machine_id="m1")
    m = machine("m1", "starting", created_at=NOW - 121, started_at=None)
    p = run(observe(machines=(m,), claims=(c,)))
    assert p.actions == (
        Destroy("thumbs", m, "boot_timeout", True),
        RequeueOrDeadLetter("thumbs", c, "boot_timeout", 3, requires_destroy="m1"),
    )


def test_max_runtime_destroys_and_requeues() -> None:
    c = claim("j1", machine_id="m1")
    m = machine("m1", started_at=NOW - 601)
    p = run(observe(machines=(m,), claims=(c,)))
    assert [(type(a).__name__, a.reason) for a in p.actions] == [
        ("Destroy", "max_runtime"),
        ("RequeueOrDeadLetter", "max_runtime"),
    ]


def test_two_claims_naming_one_condemned_machine_are_both_released_after_its_destroy() -> None:
    a, b = claim("j1", machine_id="m1"), claim("j2", machine_id="m1")
    m = machine("m1", "stopped")
    p = run(observe(machines=(m,), claims=(a, b)))
    assert p.actions == (
        Destroy("thumbs", m, "stopped", False),
        RequeueOrDeadLetter("thumbs", a, "stopped", 3, requires_destroy="m1"),
        RequeueOrDeadLetter("thumbs", b, "stopped", 3, requires_destroy="m1"),
    )


@pytest.mark.parametrize("bad_first", [True, False])
def test_claim_sharing_a_machine_destroyed_for_invalid_options_is_released(bad_first: bool) -> None:
    # Claims are judged oldest first (then by job). Found by the property test: a healthy claim
    # judged first saw its machine untouched and was kept while the next claim's rule destroyed it.
    bad_job, other_job = ("j1", "j2") if bad_first else ("j2", "j1")
    bad = claim(bad_job, machine_id="m1", machine_options_error="guest.cpus: must be >= 1")
    other = claim(other_job, machine_id="m1")
    m = machine("m1")
    p = run(observe(machines=(m,), claims=(bad, other)))
    assert p.actions == (
        Destroy("thumbs", m, "invalid_options", True),
        DeadLetter("thumbs", bad, "guest.cpus: must be >= 1", requires_destroy="m1"),
        RequeueOrDeadLetter("thumbs", other, "machine_gone", 3, requires_destroy="m1"),
    )


def test_invalid_machine_options_dead_letter_the_message() -> None:
    c = claim("j1", state="claimed", machine_options_error="guest.cpus: must be >= 1")
    p = run(observe(claims=(c,)))
    assert p.actions == (DeadLetter("thumbs", c, "guest.cpus: must be >= 1"),)


def test_unclaimed_machine_is_marked_first_and_destroyed_after_grace() -> None:
    m = machine("m1")
    first = run(observe(machines=(m,)))
    assert first.actions == (MarkOrphan("thumbs", m, "no_claim"),)
    marked = machine("m1", orphan_marked_at=NOW - 30)
    assert run(observe(machines=(marked,))).actions == ()
    late = machine("m1", orphan_marked_at=NOW - 60)
    assert run(observe(machines=(late,))).actions == (Destroy("thumbs", late, "orphan", True),)


def test_marked_machine_that_has_a_claim_again_is_kept() -> None:
    m = machine("m1", orphan_marked_at=NOW - 600)
    assert run(observe(machines=(m,), claims=(claim("j1"),))).actions == ()


def test_machine_of_an_older_launch_is_an_orphan() -> None:
    old = machine("m1", name="thumbs-j1-1", launch=1)
    current = claim("j1", launch=2, machine_name="thumbs-j1-2", claimed_at=NOW - 5)
    p = run(observe(machines=(old,), claims=(current,)))
    assert p.actions == (MarkOrphan("thumbs", old, "no_claim"),)


def test_orphans_are_not_judged_while_claims_are_unreadable() -> None:
    m = machine("m1", orphan_marked_at=NOW - 600)
    p = run(observe(machines=(m,), claims=None))
    assert p.actions == ()


def test_machine_whose_job_finished_exits_unmarked_and_goes_only_if_it_lingers() -> None:
    done = machine("m1", finished_at=NOW - 30)
    p = run(observe(machines=(done,)))
    assert p.actions == (AwaitExit("thumbs", done),)  # its exit is awaited, nothing is done to it
    assert not [d for d in p.decisions if d.kind in ("mark_orphan", "reap")]  # nothing to say
    assert p.wake_at == NOW + 30  # the end of its grace
    # still live for the caps until it is gone
    one = PoolPolicy("thumbs", "per-job", "thumbs-app", ("thumbs",), 1, orphan_grace_s=60)
    assert run(observe(ready=1, machines=(done,)), pool=one).of_type(Launch) == ()
    lingering = machine("m1", finished_at=NOW - 60)
    assert run(observe(machines=(lingering,), claims=None)).actions == (
        Destroy("thumbs", lingering, "finished_lingering", True),)
    # a machine still running a job is never reaped, finished mark or not
    owned = machine("m1", finished_at=NOW - 600)
    assert run(observe(machines=(owned,), claims=(claim("j1"),))).actions == ()


def test_stopped_and_failed_machines_are_reaped_even_without_claims_data() -> None:
    stopped, failed = machine("m1", "stopped", job="j1"), machine("m2", "failed", job="j2")
    p = run(observe(machines=(stopped, failed), claims=None))
    assert p.of_type(Destroy) == (
        Destroy("thumbs", stopped, "stopped", False),
        Destroy("thumbs", failed, "failed", True),
    )


def test_two_pools_on_one_queue_never_launch_more_than_ready() -> None:
    a = PoolPolicy("a", "per-job", "thumbs-app", ("thumbs",), 10)
    b = PoolPolicy("b", "per-job", "thumbs-app", ("thumbs",), 10)
    p = plan(observe(ready=3), [a, b], Caps(1000))
    assert sum(x.count for x in p.of_type(Launch)) == 3


def test_launches_spread_over_the_pools_queues_in_order() -> None:
    pool = PoolPolicy("multi", "per-job", "thumbs-app", ("hi", "lo"), 4)
    obs = Observation(
        now=NOW,
        queues={"hi": QueueView("hi", 3), "lo": QueueView("lo", 5)},
        machines_by_app={"thumbs-app": ()},
        create_budget={"thumbs-app": 10},
    )
    p = plan(obs, [pool], Caps(100))
    assert [(a.queue, a.count) for a in p.of_type(Launch)] == [("hi", 3), ("lo", 1)]
