"""Per-job pools over several Fly apps: creates spread over the apps' create budgets, the pool cap
spans its apps, each app's own cap still holds, and claims and machines are found in the app
their claim records (README invariants 1, 3, 4, 5)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.policy import (
    Caps,
    ClaimView,
    Launch,
    MachineView,
    MarkOrphan,
    Observation,
    Plan,
    PoolPolicy,
    QueueView,
    Relaunch,
    plan,
)
from scaler.policy.caps import Ledger, Request, allocate, pick_app

NOW = 10_000.0
APPS = ("jobs-1", "jobs-2", "jobs-3")


def pool(max_machines: int = 100, apps: tuple[str, ...] = APPS) -> PoolPolicy:
    return PoolPolicy(
        "burst", "per-job", apps[0], ("burst",), max_machines=max_machines, apps=apps,
        claim_grace_s=10, orphan_grace_s=60,
    )


def running(mid: str, app: str, job: str) -> MachineView:
    return MachineView(
        id=mid, name=f"burst-{job}-1", app=app, pool="burst", state="started",
        created_at=NOW - 5, updated_at=NOW - 4, started_at=NOW - 4, job=job, queue="burst",
        launch=1,
    )


def claim(job: str, app: str, **kw: object) -> ClaimView:
    fields: dict[str, object] = {
        "queue": "burst", "message_id": f"m-{job}", "pool": "burst", "launch": 1,
        "claimed_at": NOW - 5, "machine_name": f"burst-{job}-1", "state": "running", "app": app,
    }
    fields.update(kw)
    return ClaimView(job=job, **fields)  # type: ignore[arg-type]


def observe(
    ready: int,
    budget: dict[str, float],
    machines: dict[str, tuple[MachineView, ...] | None] | None = None,
    claims: tuple[ClaimView, ...] = (),
) -> Observation:
    by_app: dict[str, tuple[MachineView, ...] | None] = dict.fromkeys(APPS, ())
    by_app.update(machines or {})
    return Observation(
        now=NOW,
        queues={"burst": QueueView("burst", ready, oldest_ready_age_s=1.0)},
        machines_by_app=by_app,
        claims={"burst": claims},
        create_budget=budget,
    )


def launched(p: Plan) -> Counter[str]:
    out: Counter[str] = Counter()
    for a in p.actions:
        if isinstance(a, Launch):
            out[a.app] += a.count
    return out


def test_creates_spread_over_every_apps_budget() -> None:
    got = plan(observe(20, dict.fromkeys(APPS, 3.0)), [pool()], Caps(1000))
    assert launched(got) == {"jobs-1": 3, "jobs-2": 3, "jobs-3": 3}
    d = next(d for d in got.decisions if d.kind == "launch" and d.outcome == "not_taken")
    assert d.reason == "rate_limit" and d.count == 11
    assert d.inputs["create_budget"] == 9


def test_an_app_out_of_budget_is_skipped_the_others_still_create() -> None:
    got = plan(observe(10, {"jobs-1": 0.0, "jobs-2": 2.0, "jobs-3": 3.0}), [pool()], Caps(1000))
    assert launched(got) == {"jobs-2": 2, "jobs-3": 3}


def test_fewer_jobs_than_tokens_go_to_the_apps_with_most_tokens_then_fewest_live() -> None:
    machines = {"jobs-1": (running("a", "jobs-1", "x"),), "jobs-2": (), "jobs-3": ()}
    got = plan(observe(2, dict.fromkeys(APPS, 3.0), machines), [pool()], Caps(1000))
    # All three apps have 3 tokens: the two without a live machine get one each.
    assert launched(got) == {"jobs-2": 1, "jobs-3": 1}
    got = plan(observe(1, {"jobs-1": 3.0, "jobs-2": 1.0, "jobs-3": 1.0}, machines), [pool()],
               Caps(1000))
    assert launched(got) == {"jobs-1": 1}  # most tokens wins over fewer live machines


def test_pick_app_order() -> None:
    room = dict.fromkeys(APPS, 5)
    live = {"jobs-1": 0, "jobs-2": 2, "jobs-3": 1}
    assert pick_app(APPS, room, {"jobs-1": 1, "jobs-2": 4, "jobs-3": 4}, live, False) == "jobs-3"
    assert pick_app(APPS, room, dict.fromkeys(APPS, 0), live, False) is None
    assert pick_app(APPS, room, dict.fromkeys(APPS, 0), live, True) == "jobs-1"
    assert pick_app(APPS, {**room, "jobs-1": 0}, dict.fromkeys(APPS, 0), live, True) == "jobs-3"


def test_the_per_app_cap_holds_per_app() -> None:
    machines = {"jobs-1": tuple(running(f"m{i}", "jobs-1", f"j{i}") for i in range(2))}
    caps = Caps(1000, {"jobs-1": 2, "jobs-2": 1})
    got = plan(observe(20, dict.fromkeys(APPS, 3.0), machines), [pool()], caps)
    # jobs-1 is full, jobs-2 has room for one, jobs-3 has no app cap (its budget limits it).
    assert launched(got) == {"jobs-2": 1, "jobs-3": 3}


def test_the_pool_cap_counts_machines_and_claims_in_every_app() -> None:
    machines = {
        "jobs-1": (running("a", "jobs-1", "a"),),
        "jobs-2": (running("b", "jobs-2", "b"),),
        "jobs-3": (),
    }
    # j3's create is pending in jobs-3 (no listed machine yet): it holds a slot there too.
    claims = (
        claim("a", "jobs-1", machine_id="a"), claim("b", "jobs-2", machine_id="b"),
        claim("c", "jobs-3", state="claimed", create_pending_until=NOW + 20),
    )
    got = plan(observe(20, dict.fromkeys(APPS, 3.0), machines, claims), [pool(max_machines=5)],
               Caps(1000))
    assert sum(launched(got).values()) == 2
    assert got.desired["burst"] == 5
    d = next(d for d in got.decisions if d.kind == "launch" and d.outcome == "not_taken")
    assert d.reason == "cap_pool"


def test_the_global_cap_spans_the_apps() -> None:
    machines = {"jobs-2": tuple(running(f"m{i}", "jobs-2", f"j{i}") for i in range(3))}
    got = plan(observe(20, dict.fromkeys(APPS, 3.0), machines), [pool()], Caps(5))
    assert sum(launched(got).values()) == 2


def test_a_claim_is_found_and_relaunched_in_the_app_it_records() -> None:
    # The claim's machine runs in jobs-2: the claim owns it there (no orphan, no requeue).
    machines = {"jobs-2": (running("b", "jobs-2", "b"),)}
    got = plan(observe(0, dict.fromkeys(APPS, 3.0), machines,
                       (claim("b", "jobs-2", machine_id="b"),)), [pool()], Caps(1000))
    assert got.actions == ()
    # A claim whose create made no machine is relaunched in its own app, with that app's token.
    failed = claim("c", "jobs-3", state="claimed", claimed_at=NOW - 60, create_failed_at=NOW - 60,
                   updated_at=NOW - 60)
    got = plan(observe(0, {"jobs-1": 3.0, "jobs-2": 3.0, "jobs-3": 1.0}, None, (failed,)),
               [pool()], Caps(1000))
    relaunches = [a for a in got.actions if isinstance(a, Relaunch)]
    assert [(r.app, r.claim.job) for r in relaunches] == [("jobs-3", "c")]


def test_one_unknown_listing_holds_the_whole_pool() -> None:
    got = plan(observe(5, dict.fromkeys(APPS, 3.0), {"jobs-2": None}), [pool()], Caps(1000))
    assert launched(got) == {}
    d = next(d for d in got.decisions if d.pool == "burst")
    assert d.reason == "unknown_data" and "jobs-2" in d.message


def test_an_app_shared_with_another_pool_shares_its_budget() -> None:
    other = PoolPolicy("solo", "per-job", "jobs-1", ("solo",), max_machines=100)
    obs = observe(20, {"jobs-1": 2.0, "jobs-2": 2.0, "jobs-3": 0.0})
    obs = Observation(
        now=NOW,
        queues={**obs.queues, "solo": QueueView("solo", 20, oldest_ready_age_s=1.0)},
        machines_by_app=obs.machines_by_app,
        claims={"burst": (), "solo": ()},
        create_budget=obs.create_budget,
    )
    got = plan(obs, [pool(), other], Caps(1000))
    per_pool: Counter[tuple[str, str]] = Counter()
    for a in got.actions:
        if isinstance(a, Launch):
            per_pool[(a.pool, a.app)] += a.count
    assert sum(per_pool.values()) == 4  # every token of both apps, none twice
    assert per_pool[("burst", "jobs-2")] >= 1 and per_pool[("solo", "jobs-1")] >= 1
    assert sum(n for (p, a), n in per_pool.items() if a == "jobs-1") <= 2


def test_a_machine_of_the_pool_in_any_of_its_apps_is_its_own() -> None:
    # Listed in jobs-3 with no claim: it is the pool's orphan (marked), not an unknown pool's.
    stray = running("z", "jobs-3", "gone")
    got = plan(observe(0, dict.fromkeys(APPS, 3.0), {"jobs-3": (stray,)}), [pool()], Caps(1000))
    marks = [a for a in got.actions if isinstance(a, MarkOrphan)]
    assert [a.pool for a in marks] == ["burst"]


@st.composite
def spread_worlds(draw: st.DrawFn) -> tuple[list[Request], Ledger]:
    apps = [f"a{i}" for i in range(draw(st.integers(1, 4)))]
    pools = []
    for i in range(draw(st.integers(1, 5))):
        mine = draw(st.lists(st.sampled_from(apps), min_size=1, max_size=len(apps), unique=True))
        pools.append((f"p{i}", tuple(mine)))
    per_app = {a: draw(st.integers(0, 20)) for a in apps if draw(st.booleans())}
    ledger = Ledger(
        caps=Caps(draw(st.integers(0, 60)), per_app),
        pool_cap={p: draw(st.integers(0, 25)) for p, _ in pools},
        pool_live={p: draw(st.integers(0, 8)) for p, _ in pools},
        budget={a: draw(st.integers(0, 6)) for a in apps},
    )
    for p, mine in pools:
        ledger.app_live[mine[0]] = ledger.app_live.get(mine[0], 0) + ledger.pool_live[p]
        ledger.global_live += ledger.pool_live[p]
    requests = [
        Request(p, mine[0], draw(st.integers(0, 20)), 0, (0.0, i), mine if len(mine) > 1 else ())
        for i, (p, mine) in enumerate(pools)
    ]
    return requests, ledger


@settings(max_examples=300, deadline=None)
@given(spread_worlds())
def test_spread_grants_hold_every_cap_and_budget_and_stop_only_at_a_limit(
    world: tuple[list[Request], Ledger],
) -> None:
    requests, ledger = world
    grants = allocate(requests, ledger)
    per_app: Counter[str] = Counter()
    for r in requests:
        g = grants[r.pool]
        assert sum(g.by_app.values()) == g.count <= min(r.want, ledger.pool_room(r.pool))
        assert set(g.by_app) <= set(r.all_apps)
        per_app.update(g.by_app)
    assert sum(per_app.values()) <= ledger.global_room()
    for app, n in per_app.items():
        assert n <= ledger.app_room(app) and n <= ledger.budget.get(app, 0)
    for r in requests:  # nothing left on the table that every limit would have allowed
        g = grants[r.pool]
        if g.count < min(r.want, ledger.pool_room(r.pool)):
            assert sum(per_app.values()) == ledger.global_room() or all(
                per_app[a] >= min(ledger.app_room(a), ledger.budget.get(a, 0))
                for a in r.all_apps
            )
