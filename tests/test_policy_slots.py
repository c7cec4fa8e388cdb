"""Warm per-job slots in the planner: slot before create, replacement (template, max jobs, max
age, excess), caps, refills, a bound slot that never starts or dies mid-job."""

from __future__ import annotations

from dataclasses import replace

from scaler.policy import (
    Caps,
    ClaimView,
    Destroy,
    Launch,
    MachineView,
    MarkOrphan,
    Observation,
    Plan,
    PoolPolicy,
    QueueView,
    RequeueOrDeadLetter,
    plan,
)
from scaler.policy.types import SlotCreate, SlotLaunch

NOW = 10_000.0
T1, T2 = "tmpl-one", "tmpl-two"
POOL = PoolPolicy("ci", "per-job", "ci-app", ("ci",), max_machines=10, claim_grace_s=30,
                  warm_slots=3, slot_template=T1)


def slot(mid: str, state: str = "stopped", template: str = T1, **kw: object) -> MachineView:
    fields: dict[str, object] = {"name": f"ci-s-{mid}", "app": "ci-app", "pool": "ci",
                                 "state": state, "created_at": NOW - 100,
                                 "updated_at": NOW - 50, "slot": template}
    fields.update(kw)
    return MachineView(id=mid, **fields)  # type: ignore[arg-type]


def claim(job: str, **kw: object) -> ClaimView:
    fields: dict[str, object] = {"queue": "ci", "message_id": f"m-{job}", "pool": "ci",
                                 "launch": 1, "claimed_at": NOW - 5,
                                 "machine_name": f"ci-{job}-1", "state": "claimed"}
    fields.update(kw)
    return ClaimView(job=job, **fields)  # type: ignore[arg-type]


def run(
    machines: tuple[MachineView, ...], ready: int = 0, claims: tuple[ClaimView, ...] = (),
    budget: float = 100, pool: PoolPolicy = POOL, jobs: dict[str, int] | None = None,
    global_max: int = 100, inflight: int = 0,
) -> Plan:
    obs = Observation(
        now=NOW, queues={"ci": QueueView("ci", ready, oldest_ready_age_s=1.0)},
        machines_by_app={"ci-app": machines}, claims={"ci": claims},
        inflight={"ci": inflight}, create_budget={"ci-app": budget},
        slot_jobs={} if jobs is None else jobs,
    )
    return plan(obs, [pool], Caps(global_max=global_max))


def destroyed(p: Plan) -> dict[str, str]:
    return {a.machine.id: a.reason for a in p.of_type(Destroy)}


def test_ready_jobs_go_to_free_slots_before_any_create() -> None:
    p = run((slot("a"), slot("b", state="created"), slot("c")), ready=5)
    (on_slots,) = p.of_type(SlotLaunch)
    assert {m.id for m in on_slots.slots} == {"a", "b", "c"}
    (created,) = p.of_type(Launch)
    assert created.count == 2  # the rest fall back to create
    assert not destroyed(p)


def test_slots_need_no_create_token() -> None:
    p = run((slot("a"), slot("b")), ready=2, budget=0)
    (on_slots,) = p.of_type(SlotLaunch)
    assert len(on_slots.slots) == 2
    assert not p.of_type(Launch)


def test_free_slots_are_neither_reaped_nor_counted_against_caps() -> None:
    # 3 idle slots under a cap of 1: they do not count; the job still runs (on a slot)
    pool = replace(POOL, max_machines=1)
    p = run((slot("a"), slot("b"), slot("c")), ready=1, pool=pool)
    assert not destroyed(p)
    (on_slots,) = p.of_type(SlotLaunch)
    assert len(on_slots.slots) == 1


def test_a_running_slot_counts_against_the_cap() -> None:
    pool = replace(POOL, max_machines=1)
    busy = slot("a", state="started", started_at=NOW - 5)
    p = run((busy, slot("b")), ready=1, pool=pool,
            claims=(claim("j1", machine_id="a", state="running"),))
    assert not p.of_type(SlotLaunch)
    assert not p.of_type(Launch)


def test_a_bound_slot_not_yet_started_holds_its_place_in_the_cap() -> None:
    pool = replace(POOL, max_machines=1)
    bound = claim("j1", machine_id="a", updated_at=NOW - 1)
    p = run((slot("a"), slot("b")), ready=1, pool=pool, claims=(bound,))
    assert not p.of_type(SlotLaunch) and not p.of_type(Launch)
    assert "a" not in destroyed(p)  # its start is under way: waited for


def test_an_old_template_is_replaced_but_never_while_it_runs_a_job() -> None:
    old_idle = slot("a", template=T2)
    old_busy = slot("b", state="started", template=T2, started_at=NOW - 5)
    p = run((old_idle, old_busy, slot("c")), ready=2,
            claims=(claim("j1", machine_id="b", state="running"),))
    assert destroyed(p) == {"a": "slot_template"}
    (on_slots,) = p.of_type(SlotLaunch)
    assert [m.id for m in on_slots.slots] == ["c"]  # never the old template
    assert sum(a.count for a in p.of_type(Launch)) == 1


def test_slots_are_replaced_after_max_jobs_and_max_age() -> None:
    pool = replace(POOL, slot_max_jobs=5, slot_max_age_s=3600)
    p = run((slot("a"), slot("b", created_at=NOW - 4000), slot("c")), pool=pool,
            jobs={"a": 5, "c": 4})
    assert destroyed(p) == {"a": "slot_max_jobs", "b": "slot_max_age"}
    (refill,) = p.of_type(SlotCreate)
    assert refill.count == 2


def test_extra_slots_go_and_missing_ones_are_created_with_the_budget_left() -> None:
    p = run((slot("a"), slot("b"), slot("c"), slot("d")))
    assert destroyed(p) == {"d": "slot_excess"}
    assert not p.of_type(SlotCreate)
    p = run((slot("a"),), budget=1)
    (refill,) = p.of_type(SlotCreate)
    assert refill.count == 1  # two missing, one token
    p = run((slot("a"),), ready=3, budget=2)
    assert not p.of_type(SlotCreate)  # jobs first: the tokens went to creates for them
    p = run((slot("a"),), inflight=2)
    assert not p.of_type(SlotCreate)  # creates in flight may be slots: never past warm_slots
    p = run((slot("a"), slot("b"), slot("c")), ready=3)
    assert len(p.of_type(SlotLaunch)[0].slots) == 3
    assert not p.of_type(SlotCreate)  # the slots just bound are still the pool's slots


def test_a_bound_slot_that_never_starts_or_dies_mid_job_is_replaced_and_the_job_requeued() -> None:
    never = claim("j1", machine_id="a", claimed_at=NOW - 40, updated_at=NOW - 31)
    died = claim("j2", machine_id="b", updated_at=NOW - 5, state="running")
    p = run((slot("a"), slot("b")), claims=(never, died))
    assert destroyed(p) == {"a": "slot_not_started", "b": "slot_stopped"}
    requeued = {a.claim.job: (a.reason, a.requires_destroy)
                for a in p.of_type(RequeueOrDeadLetter)}
    assert requeued == {"j1": ("slot_not_started", "a"), "j2": ("slot_stopped", "b")}


def test_unknown_job_counts_bind_nothing_and_replace_nothing() -> None:
    obs = Observation(
        now=NOW, queues={"ci": QueueView("ci", 2, oldest_ready_age_s=1.0)},
        machines_by_app={"ci-app": (slot("a"), slot("b", template=T2))}, claims={"ci": ()},
        create_budget={"ci-app": 0}, slot_jobs=None,
    )
    p = plan(obs, [POOL], Caps(global_max=100))
    assert not p.of_type(SlotLaunch)
    assert not destroyed(p)


def test_a_started_slot_whose_job_finished_is_left_to_stop() -> None:
    exiting = slot("a", state="started", started_at=NOW - 5, finished_at=NOW - 1)
    p = run((exiting, slot("b"), slot("c")), ready=0)
    assert not destroyed(p)
    assert not p.of_type(SlotCreate)


def test_a_started_slot_no_claim_owns_is_reaped_as_an_orphan() -> None:
    # a stale binding: the slot runs, but no claim names it (its job was settled elsewhere)
    stray = slot("a", state="started", started_at=NOW - 5)
    p = run((stray, slot("b"), slot("c")), jobs={"a": 3})
    (mark,) = p.of_type(MarkOrphan)
    assert mark.machine.id == "a"
    marked = replace(stray, orphan_marked_at=NOW - 61)
    p = run((marked, slot("b"), slot("c")), jobs={"a": 3})
    assert destroyed(p) == {"a": "orphan"}


def test_a_slot_stuck_starting_is_destroyed_and_its_job_requeued() -> None:
    stuck = slot("a", state="starting", updated_at=NOW - 200)
    c = claim("j1", machine_id="a", claimed_at=NOW - 210, updated_at=NOW - 205)
    p = run((stuck, slot("b")), claims=(c,), pool=replace(POOL, boot_timeout_s=120))
    assert "a" in destroyed(p)
    (requeue,) = p.of_type(RequeueOrDeadLetter)
    assert requeue.claim.job == "j1"


def test_an_old_slot_just_started_is_not_a_boot_timeout() -> None:
    # created long ago, started 5 s ago, and listed without events (no started_at)
    starting = slot("a", state="starting", created_at=NOW - 3600, updated_at=NOW - 5)
    c = claim("j1", machine_id="a", claimed_at=NOW - 6, updated_at=NOW - 6)
    p = run((starting, slot("b")), claims=(c,), pool=replace(POOL, boot_timeout_s=120))
    assert not destroyed(p)
    assert not p.of_type(RequeueOrDeadLetter)


def test_a_new_slot_booting_once_is_left_alone() -> None:
    warming = slot("a", state="started", started_at=NOW - 1, created_at=NOW - 3)
    p = run((warming, slot("b"), slot("c")), jobs={})
    assert not p.of_type(MarkOrphan) and not destroyed(p)
    p = run((warming, slot("b"), slot("c")), jobs={"a": 1})  # it has run jobs: no claim, orphan
    assert [m.machine.id for m in p.of_type(MarkOrphan)] == ["a"]


def test_warm_slots_lowered_to_zero_destroys_the_idle_slots_and_lets_busy_ones_finish() -> None:
    none_warm = replace(POOL, warm_slots=0)
    busy = slot("b", state="started")
    job = claim("j1", machine_name=busy.name, state="running")
    p = run((slot("a"), busy, slot("c", state="created")), claims=(job,), pool=none_warm)
    assert destroyed(p) == {"a": "slot_excess", "c": "slot_excess"}
    assert not p.of_type(SlotCreate)
    p = run((slot("a"),), ready=1, pool=none_warm)
    assert not p.of_type(SlotLaunch)  # a slot going away takes no job: the job gets a create
    assert destroyed(p) == {"a": "slot_excess"}
    assert sum(a.count for a in p.of_type(Launch)) == 1


def test_a_new_slot_boots_within_the_caps() -> None:
    """A slot boots once as it is created: it is only created where the caps have room."""
    running = tuple(
        MachineView(id=f"r{i}", name=f"ci-j{i}-1", app="ci-app", pool="ci", state="started",
                    created_at=NOW - 10, updated_at=NOW - 10, job=f"j{i}", queue="ci", launch=1)
        for i in range(9)
    )
    claims = tuple(claim(f"j{i}", machine_id=f"r{i}", state="running") for i in range(9))
    p = run(running, claims=claims)
    (refill,) = p.of_type(SlotCreate)
    assert refill.count == 1  # 9 of cap 10 run: room for one of the three missing slots
    p = run(running, claims=claims, global_max=9)
    assert not p.of_type(SlotCreate)
    assert any(d.reason == "cap_global" and d.kind == "create" for d in p.decisions)
