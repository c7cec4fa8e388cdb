"""The planner's rules for claims under slow, refused and renamed conditions (pure, no I/O):
a claim holds its pool's slot until it is settled, a pending create is never relaunched over, a
failed create backs off exponentially, and claims whose pool is gone keep their machine or give
their job back."""

from __future__ import annotations

import math

from scaler.policy import (
    Caps,
    ClaimView,
    DeadLetter,
    Destroy,
    GiveBack,
    Launch,
    MachineOptions,
    MachineView,
    Observation,
    PoolPolicy,
    QueueView,
    Relaunch,
    plan,
)
from scaler.policy.perjob import relaunch_due

NOW = 10_000.0
POOL = PoolPolicy(name="jobs", mode="per-job", app="app", queues=("q",), max_machines=1,
                  claim_grace_s=10.0, relaunch_backoff_max_s=60.0)
CAPS = Caps(global_max=100)


def claim(job: str = "j1", **kw: object) -> ClaimView:
    fields: dict[str, object] = {
        "queue": "q", "job": job, "message_id": f"m-{job}", "pool": "jobs", "launch": 1,
        "claimed_at": NOW - 100, "machine_name": f"jobs-{job}-1", **kw,
    }
    return ClaimView(**fields)  # type: ignore[arg-type]


def obs(*claims: ClaimView, ready: int = 0, machines: tuple[MachineView, ...] = (),
        budget: float = 10.0, listed: dict[str, tuple[MachineView, ...] | None] | None = None,
        ) -> Observation:
    return Observation(
        now=NOW,
        queues={"q": QueueView("q", ready=ready)},
        machines_by_app=listed if listed is not None else {"app": machines},
        claims={"q": claims},
        inflight={},
        create_budget={"app": budget},
    )


def test_a_claim_without_a_machine_holds_its_slot() -> None:
    # Break 5: claims whose creates keep failing did not count against the cap, so the whole
    # queue got claimed. A refused claim keeps the pool's only slot: nothing more is claimed.
    waiting = claim(create_failed_at=NOW - 1)
    p = plan(obs(waiting, ready=3), [POOL], CAPS)
    assert p.of_type(Launch) == ()
    assert {(d.kind, d.reason) for d in p.not_taken() if d.count} >= {("launch", "cap_pool")}


def test_a_pending_create_is_never_relaunched_over() -> None:
    # Break 4: a claim was relaunched by Redis state alone while its first create still ran.
    for pending in (NOW + 5, math.inf):
        p = plan(obs(claim(create_pending_until=pending)), [POOL], CAPS)
        assert p.of_type(Relaunch) == ()
        assert [(d.kind, d.reason) for d in p.not_taken() if d.count] == [
            ("wait", "create_pending")
        ]
    # once the window is over, the claim is relaunched under its name
    p = plan(obs(claim(create_pending_until=NOW - 1)), [POOL], CAPS)
    assert [a.claim.job for a in p.of_type(Relaunch)] == ["j1"]


def test_failed_creates_back_off_exponentially_up_to_a_ceiling() -> None:
    # Break 5: after one grace, every tick relaunched a refused create.
    assert relaunch_due(POOL, claim(create_failed_at=NOW, create_attempts=1)) == NOW + 10
    assert relaunch_due(POOL, claim(create_failed_at=NOW, create_attempts=2)) == NOW + 20
    assert relaunch_due(POOL, claim(create_failed_at=NOW, create_attempts=3)) == NOW + 40
    assert relaunch_due(POOL, claim(create_failed_at=NOW, create_attempts=9)) == NOW + 60
    backing_off = claim(create_failed_at=NOW - 15, create_attempts=2)
    p = plan(obs(backing_off), [POOL], CAPS)
    assert p.of_type(Relaunch) == ()
    assert p.wake_at == NOW + 5  # the loop plans again when the backoff ends, not before
    due = claim(create_failed_at=NOW - 25, create_attempts=2)
    assert len(plan(obs(due), [POOL], CAPS).of_type(Relaunch)) == 1


def test_a_relaunch_needs_only_create_budget_not_room() -> None:
    full = PoolPolicy(name="jobs", mode="per-job", app="app", queues=("q",), max_machines=2)
    running = MachineView(id="m0", name="jobs-j0-1", app="app", pool="jobs", state="started",
                          job="j0", queue="q", launch=1)
    claims = (claim("j0", machine_id="m0", state="running"), claim("j1"))
    assert [a.claim.job for a in plan(obs(*claims, machines=(running,)), [full], CAPS)
            .of_type(Relaunch)] == ["j1"]
    assert plan(obs(*claims, machines=(running,), budget=0.0), [full], CAPS).of_type(
        Relaunch) == ()


def test_a_lowered_cap_gives_back_the_newest_machineless_claims() -> None:
    lowered = PoolPolicy(name="jobs", mode="per-job", app="app", queues=("q",), max_machines=1)
    old, new = claim("j1", claimed_at=NOW - 200), claim("j2", claimed_at=NOW - 100)
    p = plan(obs(old, new), [lowered], CAPS)
    assert [(a.claim.job, a.reason) for a in p.of_type(GiveBack)] == [("j2", "over_cap")]
    assert [a.claim.job for a in p.of_type(Relaunch)] == ["j1"]


def _running(pool: str) -> MachineView:
    # listed under the pool label it was created with
    return MachineView(id="m1", name=f"{pool}-j1-1", app="app", pool=None, state="started",
                       created_at=NOW - 500, updated_at=NOW - 490, started_at=NOW - 490,
                       job="j1", queue="q", launch=1, orphan_marked_at=NOW - 1000)


def test_a_renamed_pool_adopts_the_claims_of_its_queue() -> None:
    # Break 2: the running machine of a renamed pool was marked an orphan and destroyed.
    renamed = PoolPolicy(name="jobs2", mode="per-job", app="app", queues=("q",), max_machines=1)
    c = claim(machine_id="m1", state="running", app="app")
    p = plan(obs(c, ready=2, machines=(_running("jobs"),)), [renamed], CAPS)
    assert p.actions == ()  # not destroyed, not marked, and its slot is still taken
    assert [(d.kind, d.reason) for d in p.not_taken() if d.count] == [("launch", "cap_pool")]


def test_claims_of_a_removed_pool_finish_or_go_back_to_their_queue() -> None:
    other = PoolPolicy(name="other", mode="worker", app="app", queues=("q",), max_machines=3)
    running = claim(machine_id="m1", state="running", app="app")
    p = plan(obs(running, machines=(_running("jobs"),)), [other], CAPS)
    assert p.of_type(Destroy) == () and p.of_type(GiveBack) == ()  # the job runs to its end
    dead = MachineView(id="m1", name="jobs-j1-1", app="app", pool=None, state="failed",
                       job="j1", queue="q", launch=1)
    p = plan(obs(running, machines=(dead,)), [other], CAPS)
    assert [(a.claim.job, a.requires_destroy) for a in p.of_type(GiveBack)] == [("j1", "m1")]
    never = claim("j2", app="app")
    p = plan(obs(never), [other], CAPS)
    assert [a.claim.job for a in p.of_type(GiveBack)] == ["j2"]
    # unknown listing: nothing is decided about it
    p = plan(obs(never, listed={"app": None}), [other], CAPS)
    assert p.of_type(GiveBack) == ()


def test_relaunches_take_only_their_pools_share_of_the_create_budget() -> None:
    # Chaos R11: a pool whose creates kept failing relaunched first on every tick and spent the
    # app's whole budget; the other pool of the app waited.
    doomed = PoolPolicy(name="doomed", mode="per-job", app="app", queues=("q",), max_machines=5)
    healthy = PoolPolicy(name="healthy", mode="per-job", app="app", queues=("h",),
                         max_machines=5)
    failing = tuple(
        claim(f"j{i}", pool="doomed", create_failed_at=NOW - 100) for i in range(3)
    )
    o = Observation(
        now=NOW, queues={"q": QueueView("q", 0), "h": QueueView("h", ready=3)},
        machines_by_app={"app": ()}, claims={"q": failing, "h": ()}, create_budget={"app": 2},
    )
    p = plan(o, [doomed, healthy], CAPS)
    assert len(p.of_type(Relaunch)) == 1
    assert [(a.pool, a.count) for a in p.of_type(Launch)] == [("healthy", 1)]


def test_a_create_fly_refused_for_the_jobs_own_options_is_dead_lettered_with_its_reason() -> None:
    own = MachineOptions(cpu_kind="performance", cpus=2, memory_mb=4096)
    refused = claim(create_failed_at=NOW - 1, create_refused="performance machines not enabled",
                    machine_options=own)
    p = plan(obs(refused), [POOL], CAPS)
    (action,) = p.of_type(DeadLetter)
    assert (action.cause, action.reason) == (
        "fly_refused", "Fly refused this job's machine: performance machines not enabled")
    assert [(d.kind, d.outcome, d.reason) for d in p.decisions if d.kind == "dead_letter"] == [
        ("dead_letter", "acted", action.reason)]


def test_a_refused_pool_template_backs_off_and_is_not_dead_lettered() -> None:
    # No options of the job's own: the pool's config is at fault, not the job.
    refused = claim(create_failed_at=NOW - 1, create_refused="image not found")
    p = plan(obs(refused), [POOL], CAPS)
    assert p.of_type(DeadLetter) == () and p.of_type(Relaunch) == ()
    assert [(d.kind, d.reason) for d in p.not_taken() if d.count] == [("wait", "backoff")]
    assert p.wake_at == relaunch_due(POOL, refused)


def test_an_adopted_claim_with_invalid_options_is_dead_lettered_by_its_new_pool() -> None:
    renamed = PoolPolicy(name="jobs2", mode="per-job", app="app", queues=("q",), max_machines=1)
    bad = claim(machine_options_error="invalid machine options: fly_machine.cpus: 3",
                create_pending_until=NOW + 20)
    p = plan(obs(bad), [renamed], CAPS)
    assert p.of_type(DeadLetter) == (
        DeadLetter("jobs2", bad, "invalid machine options: fly_machine.cpus: 3"),)
