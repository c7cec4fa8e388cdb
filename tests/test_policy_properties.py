"""Property tests: random observations, and the invariants every plan must keep (the invariants in
README)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.policy import (
    Caps,
    ClaimView,
    Create,
    DeadLetter,
    Destroy,
    GiveBack,
    Launch,
    MachineView,
    MarkOrphan,
    Observation,
    Plan,
    PoolPolicy,
    QueueView,
    Relaunch,
    RequeueOrDeadLetter,
    Start,
    Suspend,
    plan,
)
from scaler.policy.slots import is_idle_slot
from scaler.policy.states import is_gone, is_live
from scaler.policy.types import PoolMode, SlotCreate, SlotLaunch

NOW = 100_000.0
APPS = ("a1", "a2", "a3")
QUEUES = ("q0", "q1", "q2")
JOBS = tuple(f"j{i}" for i in range(8))
POOL_NAMES = ("p0", "p1", "p2", "p3")
STATES = (
    "created",
    "starting",
    "started",
    "stopping",
    "stopped",
    "suspending",
    "suspended",
    "replacing",
    "updating",
    "restarting",
    "destroying",
    "destroyed",
    "failed",
    "launch_failed",
    "someday_new_state",
)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

times = st.floats(min_value=NOW - 2_000, max_value=NOW)
SLOT_TEMPLATE = "tmpl-now"


@st.composite
def pools(draw: st.DrawFn) -> tuple[PoolPolicy, ...]:
    n = draw(st.integers(1, len(POOL_NAMES)))
    out = []
    for name in POOL_NAMES[:n]:
        max_machines = draw(st.integers(0, 6))
        mode: PoolMode = draw(st.sampled_from(("per-job", "worker")))
        out.append(
            PoolPolicy(
                name=name,
                mode=mode,
                app=draw(st.sampled_from(APPS)),
                queues=tuple(draw(st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2))),
                max_machines=max_machines,
                boot_timeout_s=draw(st.sampled_from((30.0, 300.0))),
                max_runtime_s=draw(st.sampled_from((None, 500.0))),
                max_launches=draw(st.integers(1, 3)),
                orphan_grace_s=draw(st.sampled_from((0.0, 60.0, 600.0))),
                claim_grace_s=draw(st.sampled_from((0.0, 30.0))),
                min_machines=draw(st.integers(0, max_machines)),
                jobs_per_machine=draw(st.integers(1, 3)),
                warm_machines=draw(st.integers(0, 2)),
                scale_on=draw(st.sampled_from(("depth", "latency", "prometheus"))),
                target_latency_s=10.0,
                target_per_machine=draw(st.sampled_from((0.5, 2.0))),
                warm_slots=draw(st.sampled_from((0, 0, 1, 2))) if mode == "per-job" else 0,
                slot_template=SLOT_TEMPLATE if mode == "per-job" else "",
                warm_suspended=draw(st.sampled_from((0, 0, 1))) if mode == "worker" else 0,
            )
        )
    return tuple(out)


@st.composite
def machine(draw: st.DrawFn, mid: str, app: str, local: tuple[str, ...]) -> MachineView:
    job = draw(st.sampled_from((None, *JOBS)))
    launch = draw(st.integers(1, 3))
    return MachineView(
        id=mid,
        name=f"m-{job}-{launch}" if job and draw(st.booleans()) else f"name-{mid}",
        app=app,
        pool=draw(st.sampled_from((None, "gone-pool", *POOL_NAMES, *local, *local))),
        state=draw(st.sampled_from((*STATES, "started", "started", "stopped", "stopped"))),
        created_at=draw(times),
        updated_at=draw(times),
        started_at=draw(st.one_of(st.none(), times)),
        job=job,
        queue=draw(st.sampled_from((None, *QUEUES))),
        launch=launch,
        orphan_marked_at=draw(st.one_of(st.none(), times)),
        finished_at=draw(st.one_of(st.none(), st.none(), times)),
        idle_since=draw(st.one_of(st.none(), st.none(), times)),
        slot=draw(st.sampled_from((None, None, None, SLOT_TEMPLATE, SLOT_TEMPLATE, "tmpl-old"))),
    )


@st.composite
def claim(draw: st.DrawFn, queue: str, machine_ids: list[str]) -> ClaimView:
    job = draw(st.sampled_from(JOBS))
    launch = draw(st.integers(1, 3))
    return ClaimView(
        queue=queue,
        job=job,
        message_id=f"msg-{job}",
        pool=draw(st.sampled_from(("gone-pool", *POOL_NAMES))),
        launch=launch,
        claimed_at=draw(times),
        machine_name=f"m-{job}-{launch}",
        state=draw(st.sampled_from(("claimed", "running"))),
        machine_id=draw(st.one_of(st.none(), st.sampled_from(machine_ids or ["nowhere"]))),
        machine_options_error=draw(st.sampled_from((None, None, None, "guest.cpus: bad"))),
        updated_at=draw(st.one_of(st.none(), times)),
    )


def coherent_claim(m: MachineView, with_id: bool, claimed_at: float) -> ClaimView:
    """The claim a real launch would have left for machine ``m``."""
    assert m.job is not None and m.queue is not None and m.launch is not None
    return ClaimView(
        queue=m.queue,
        job=m.job,
        message_id=f"msg-{m.job}",
        pool=m.pool or "gone-pool",
        launch=m.launch,
        claimed_at=claimed_at,
        machine_name=m.name,
        state="running",
        machine_id=m.id if with_id else None,
    )


@st.composite
def observations(draw: st.DrawFn) -> tuple[Observation, tuple[PoolPolicy, ...], Caps]:
    ps = draw(pools())
    machines_by_app: dict[str, tuple[MachineView, ...] | None] = {}
    ids: list[str] = []
    listed: list[MachineView] = []
    for app in APPS:
        if draw(st.integers(0, 6)) == 0:
            machines_by_app[app] = None
            continue
        n = draw(st.integers(0, 10))
        local = tuple(p.name for p in ps if p.app == app)
        ms = tuple(draw(machine(f"{app}-m{i}", app, local)) for i in range(n))
        ids.extend(m.id for m in ms)
        listed.extend(m for m in ms if m.job and m.queue)
        machines_by_app[app] = ms
    queues: dict[str, QueueView | None] = {}
    claims: dict[str, tuple[ClaimView, ...] | None] = {}
    seen_jobs: set[str] = set()
    for q in QUEUES:
        queues[q] = draw(
            st.one_of(
                st.none(),
                st.builds(
                    QueueView,
                    name=st.just(q),
                    ready=st.integers(0, 12),
                    in_flight=st.integers(0, 4),
                    delayed_due=st.integers(0, 2),
                    oldest_ready_age_s=st.one_of(st.none(), st.floats(0, 100)),
                ),
            )
        )
        drawn = draw(st.one_of(st.none(), st.lists(claim(q, ids), max_size=5)))
        if drawn is not None:  # claims that agree with a listed machine, as in real life
            for m in listed:
                if m.queue == q and draw(st.booleans()):
                    drawn.insert(0, coherent_claim(m, draw(st.booleans()), draw(times)))
        if drawn is not None:  # a redis_message_id is claimed at most once
            unique = []
            for c in drawn:
                if c.job not in seen_jobs:
                    seen_jobs.add(c.job)
                    unique.append(c)
            drawn = unique
        claims[q] = None if drawn is None else tuple(drawn)
    obs = Observation(
        now=NOW,
        queues=queues,
        machines_by_app=machines_by_app,
        claims=claims,
        inflight={p.name: draw(st.integers(0, 2)) for p in ps},
        create_budget={app: draw(st.floats(0, 20)) for app in APPS if draw(st.booleans())},
        metric_values={p.name: draw(st.one_of(st.none(), st.floats(0, 20))) for p in ps},
        slot_jobs=draw(st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(ids or ["nowhere"]), st.integers(0, 3), max_size=4),
        )),
    )
    per_app = {app: draw(st.integers(0, 10)) for app in APPS if draw(st.booleans())}
    return obs, ps, Caps(global_max=draw(st.integers(0, 12)), per_app=per_app)


Case = tuple[Observation, tuple[PoolPolicy, ...], Caps]


@dataclass
class Added:
    """Machines each pool makes live in a plan."""

    per_pool: Counter[str]
    creates_per_app: Counter[str]


def added(p: Plan, ps: tuple[PoolPolicy, ...]) -> Added:
    app_of = {x.name: x.app for x in ps}
    per_pool: Counter[str] = Counter()
    creates: Counter[str] = Counter()
    for a in p.actions:
        if isinstance(a, Launch | Create):
            per_pool[a.pool] += a.count
            creates[a.app] += a.count
        elif isinstance(a, Relaunch):  # the claim already holds its slot: no new live machine
            creates[a.app] += 1
        elif isinstance(a, Start):
            per_pool[a.pool] += 1
        elif isinstance(a, SlotLaunch):  # bound and started: live from the binding
            per_pool[a.pool] += len(a.slots)
        elif isinstance(a, SlotCreate):  # a new slot boots once before it waits stopped
            per_pool[a.pool] += a.count
            creates[a.app] += a.count
    assert all(app_of[pool] for pool in per_pool)
    return Added(per_pool, creates)


def claim_slots(
    obs: Observation, ps: tuple[PoolPolicy, ...]
) -> tuple[Counter[str], Counter[str]]:
    """Per per-job pool, its claims whose machine is not listed under that pool's label: each one
    will be (or may still be) a live machine of the pool. First those whose machine no listing
    shows live (one more machine for the pool, its app and the global cap), then those whose
    machine is listed live under another label (already counted for its app: the pool only)."""
    per_job = [x for x in ps if x.mode == "per-job"]
    names = {x.name for x in per_job}
    out: Counter[str] = Counter()
    relabeled: Counter[str] = Counter()
    for q, cs in obs.claims.items():
        for c in cs or ():
            owner = c.pool if c.pool in names else next(
                (x.name for x in per_job if q in x.queues), None)
            if owner is None:
                continue
            pool = next(x for x in per_job if x.name == owner)
            listing = obs.machines_by_app.get(c.app or pool.app)
            if obs.machines_by_app.get(pool.app) is None:
                continue
            if listing is None:
                out[owner] += 1
                continue
            if c.machine_id is not None:
                found = [m for m in listing if m.id == c.machine_id]
            else:
                found = [m for m in listing if m.name == c.machine_name]
                if not found:
                    found = [m for m in listing if (m.job, m.launch) == (c.job, c.launch)]
            m = min(found, key=lambda m: (is_gone(m.state), m.id)) if found else None
            if m is None or is_idle_slot(m):
                out[owner] += 1
            elif is_live(m.state) and m.pool != owner:
                relabeled[owner] += 1
    return out, relabeled


def check_caps_hold_after_the_plan(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    add = added(p, ps)
    by_name = {x.name: x for x in ps}
    pool_live: Counter[str] = Counter()
    app_live: Counter[str] = Counter()
    for app, ms in obs.machines_by_app.items():
        for m in ms or ():
            if is_live(m.state) and not is_idle_slot(m):  # an idle slot runs nothing
                app_live[app] += 1
                if m.pool in by_name and by_name[m.pool].app == app:
                    pool_live[m.pool] += 1
    for x in ps:
        pool_live[x.name] += obs.inflight[x.name]
        app_live[x.app] += obs.inflight[x.name]
    unlisted, relabeled = claim_slots(obs, ps)
    for pool, n in unlisted.items():  # claims hold their slot until settled
        pool_live[pool] += n
        app_live[by_name[pool].app] += n
    for pool, n in relabeled.items():
        pool_live[pool] += n
    for a in p.of_type(GiveBack):
        if a.reason == "over_cap":
            pool_live[a.pool] -= 1
            app_live[by_name[a.pool].app] -= 1
    for pool, n in add.per_pool.items():
        assert pool_live[pool] + n <= by_name[pool].max_machines
    for a in p.of_type(Relaunch):
        assert pool_live[a.pool] <= by_name[a.pool].max_machines, "relaunch over a lowered cap"
    app_added: Counter[str] = Counter()
    for pool, n in add.per_pool.items():
        app_added[by_name[pool].app] += n
    for app, n in app_added.items():
        if n and app in caps.per_app:
            assert app_live[app] + n <= caps.per_app[app]
    total = sum(add.per_pool.values())
    if total:
        known_live = sum(
            v for app, v in app_live.items() if obs.machines_by_app.get(app) is not None
        )
        assert known_live + total <= caps.global_max


def check_creates_stay_within_the_budget(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    add = added(p, ps)
    for app, n in add.creates_per_app.items():
        assert n <= math.floor(obs.create_budget.get(app, 0.0))


def check_no_launch_beyond_ready_and_none_on_unknown_data(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    launched: Counter[str] = Counter()
    for a in p.of_type(Launch):
        assert a.count > 0
        launched[a.queue] += a.count
    for q, n in launched.items():
        view = obs.queues[q]
        assert view is not None, "launch on an unknown queue"
        assert obs.claims[q] is not None, "launch while claims are unknown"
        assert n <= view.ready


def check_nothing_happens_on_apps_whose_listing_is_unknown(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    blind = {x.name for x in ps if obs.machines_by_app.get(x.app) is None}
    destroyed_on = {a.machine.id: a.machine.app for a in p.of_type(Destroy)}
    for a in p.actions:
        if isinstance(a, GiveBack) and a.reason == "pool_gone":
            # A claim no per-job pool owns: judged on the listing that holds its machine.
            if a.requires_destroy is not None:
                assert obs.machines_by_app.get(destroyed_on[a.requires_destroy]) is not None
            elif a.claim.app is not None:
                assert obs.machines_by_app.get(a.claim.app) is not None
            else:
                c = a.claim
                seen = any(
                    m.id == c.machine_id or m.name == c.machine_name
                    or (m.job, m.launch) == (c.job, c.launch)
                    for ms in obs.machines_by_app.values() for m in ms or ()
                )
                assert seen or all(ms is not None for ms in obs.machines_by_app.values())
            continue
        assert a.pool not in blind, a
        if isinstance(a, Destroy | Start | MarkOrphan):
            assert obs.machines_by_app.get(a.machine.app) is not None


def check_every_claim_and_machine_is_touched_at_most_once(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    claim_jobs = [
        a.claim.job
        for a in p.actions
        if isinstance(a, Relaunch | GiveBack | DeadLetter | RequeueOrDeadLetter)
    ]
    assert len(claim_jobs) == len(set(claim_jobs))
    machine_ids = [
        a.machine.id for a in p.actions if isinstance(a, Destroy | Start | MarkOrphan | Suspend)
    ]
    machine_ids += [m.id for a in p.of_type(SlotLaunch) for m in a.slots]
    assert len(machine_ids) == len(set(machine_ids))


def check_claim_releases_follow_their_destroy(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    destroyed: set[str] = set()
    for a in p.actions:
        if isinstance(a, Destroy):
            destroyed.add(a.machine.id)
        elif isinstance(a, GiveBack | DeadLetter | RequeueOrDeadLetter) and a.requires_destroy:
            assert a.requires_destroy in destroyed


def check_relaunch_only_when_no_machine_is_visible(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    for a in p.of_type(Relaunch):
        listing = obs.machines_by_app[a.app]
        assert listing is not None
        assert a.claim.machine_id is None
        for m in listing:
            if m.name == a.claim.machine_name or (m.job, m.launch) == (a.claim.job, a.claim.launch):
                assert is_gone(m.state)


def check_machines_are_destroyed_only_for_a_reason_that_holds(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    by_name = {x.name: x for x in ps}
    for a in p.of_type(Destroy):
        m = a.machine
        if a.reason == "orphan":
            assert m.orphan_marked_at is not None and m.finished_at is None
        if a.reason == "finished_lingering":
            assert m.finished_at is not None and m.finished_at <= obs.now
        if a.reason in ("stopped", "suspended"):
            assert m.state == a.reason
        if a.pool is not None and by_name[a.pool].mode == "worker" and m.state == "started":
            assert a.reason in {"max_runtime"}, "a started worker is never killed to scale down"


def check_a_machine_whose_job_finished_is_never_marked_an_orphan(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    assert all(a.machine.finished_at is None for a in p.of_type(MarkOrphan))


def check_unknown_worker_signal_never_scales_down_or_beyond_min(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    for x in ps:
        if x.mode != "worker" or obs.machines_by_app.get(x.app) is None:
            continue
        unknown = any(obs.queues[q] is None for q in x.queues) or (
            x.scale_on == "prometheus" and obs.metric_values[x.name] is None
        )
        if not unknown:
            continue
        assert not [a for a in p.of_type(Destroy) if a.pool == x.name and a.reason == "stopped"]
        live = (
            sum(
                1 for m in obs.machines_by_app[x.app] or () if m.pool == x.name and is_live(m.state)
                and not is_idle_slot(m)
            )
            + obs.inflight[x.name]
        )
        up = sum(1 for a in p.of_type(Start) if a.pool == x.name) + sum(
            a.count for a in p.of_type(Create) if a.pool == x.name
        )
        assert up <= max(0, x.min_machines - live)
        assert p.desired[x.name] >= min(live, x.max_machines)


def check_every_pool_gets_a_decision_and_plans_are_deterministic(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    decided = {d.pool for d in p.decisions}
    assert {x.name for x in ps} <= decided
    assert set(p.desired) == {x.name for x in ps}
    assert all(d.message and d.reason for d in p.decisions)
    assert plan(obs, ps, caps) == p


def check_no_machine_of_a_claim_is_destroyed_without_releasing_it(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    destroyed = {a.machine.id for a in p.of_type(Destroy)}
    released = {
        a.claim.job for a in p.actions if isinstance(a, DeadLetter | RequeueOrDeadLetter | GiveBack)
    }
    per_job = {x.name: x for x in ps if x.mode == "per-job"}
    newest: dict[str, ClaimView] = {}
    for cs in obs.claims.values():
        for c in cs or ():
            if c.job not in newest or (c.launch, c.claimed_at) > (
                newest[c.job].launch,
                newest[c.job].claimed_at,
            ):
                newest[c.job] = c
    for c in newest.values():
        if c.pool in per_job and c.machine_id in destroyed:
            listing = obs.machines_by_app.get(per_job[c.pool].app) or ()
            if any(m.id == c.machine_id for m in listing):
                assert c.job in released, f"destroyed the machine of {c.job} and kept its claim"


def check_machines_owned_by_a_claim_are_never_orphaned(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    per_job = {x.name: x for x in ps if x.mode == "per-job"}
    newest_launch: dict[str, int] = {}
    for cs in obs.claims.values():
        for c in cs or ():
            newest_launch[c.job] = max(newest_launch.get(c.job, 0), c.launch)
    owned: set[str] = set()
    for cs in obs.claims.values():
        for c in cs or ():
            if c.pool in per_job and c.machine_id and c.launch == newest_launch[c.job]:
                listing = obs.machines_by_app.get(per_job[c.pool].app) or ()
                owned |= {m.id for m in listing if m.id == c.machine_id}
    for a in p.actions:
        if isinstance(a, MarkOrphan) or (isinstance(a, Destroy) and a.reason == "orphan"):
            assert a.machine.id not in owned, f"orphaned {a.machine.id}, which a claim owns"


def check_jobs_go_only_to_free_slots_of_the_current_template(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    by_name = {x.name: x for x in ps}
    owned = {c.machine_id for cs in obs.claims.values() for c in cs or () if c.machine_id}
    owned |= {c.machine_name for cs in obs.claims.values() for c in cs or ()}
    for a in p.of_type(SlotLaunch):
        pool = by_name[a.pool]
        assert obs.slot_jobs is not None, "a slot bound while its job counts are unknown"
        assert pool.mode == "per-job" and 0 < len(a.slots) <= pool.warm_slots
        for m in a.slots:
            assert m.pool == pool.name and m.app == pool.app
            assert is_idle_slot(m) and m.slot == pool.slot_template, f"{m} is not a free slot"
            assert m.id not in owned and m.name not in owned, f"{m.id} already bound to a job"
    for made in p.of_type(SlotCreate):
        pool = by_name[made.pool]
        have = sum(1 for m in obs.machines_by_app.get(pool.app) or ()
                   if m.pool == pool.name and m.slot == pool.slot_template
                   and not is_gone(m.state))
        assert made.count <= pool.warm_slots - have


def check_no_per_job_machine_is_ever_suspended(
    obs: Observation, ps: tuple[PoolPolicy, ...], caps: Caps, p: Plan
) -> None:
    by_name = {x.name: x for x in ps}
    for a in p.of_type(Suspend):
        assert by_name[a.pool].mode == "worker" and by_name[a.pool].warm_suspended > 0
        assert a.machine.state == "started"


CHECKS = [
    check_jobs_go_only_to_free_slots_of_the_current_template,
    check_no_per_job_machine_is_ever_suspended,
    check_machines_owned_by_a_claim_are_never_orphaned,
    check_no_machine_of_a_claim_is_destroyed_without_releasing_it,
    check_caps_hold_after_the_plan,
    check_creates_stay_within_the_budget,
    check_no_launch_beyond_ready_and_none_on_unknown_data,
    check_nothing_happens_on_apps_whose_listing_is_unknown,
    check_every_claim_and_machine_is_touched_at_most_once,
    check_claim_releases_follow_their_destroy,
    check_relaunch_only_when_no_machine_is_visible,
    check_machines_are_destroyed_only_for_a_reason_that_holds,
    check_a_machine_whose_job_finished_is_never_marked_an_orphan,
    check_unknown_worker_signal_never_scales_down_or_beyond_min,
    check_every_pool_gets_a_decision_and_plans_are_deterministic,
]


@given(observations())
@SETTINGS
def test_every_plan_keeps_every_invariant(case: Case) -> None:
    p = plan(*case)
    for check in CHECKS:
        check(*case, p)
