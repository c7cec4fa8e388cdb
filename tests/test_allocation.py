"""The allocator's steps give exactly what unit-by-unit water-filling gives: each next unit to the
pool holding the fewest machines (live plus granted), ties by rank, within every room and budget."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.policy.caps import Ledger, Request, allocate
from scaler.policy.types import Caps


def reference(requests: list[Request], ledger: Ledger) -> dict[str, tuple[int, int]]:
    """Unit by unit: pop the lowest (level, rank), give one unit if every room allows."""
    order = sorted(requests, key=lambda r: r.rank)
    rem = {r.pool: min(max(0, r.want), ledger.pool_room(r.pool)) for r in order}
    free = {r.pool: min(max(0, r.free), rem[r.pool]) for r in order}
    app_room = {r.app: ledger.app_room(r.app) for r in order}
    budget = {r.app: ledger.budget.get(r.app, 0) for r in order}
    glob = ledger.global_room()
    got = {r.pool: [0, 0] for r in order}
    heap = [(ledger.live(r.pool), i, r) for i, r in enumerate(order)]
    heapq.heapify(heap)
    while heap:
        level, i, r = heapq.heappop(heap)
        if not (rem[r.pool] and glob and app_room[r.app] and (free[r.pool] or budget[r.app])):
            continue
        rem[r.pool] -= 1
        glob -= 1
        app_room[r.app] -= 1
        got[r.pool][0] += 1
        if free[r.pool]:
            free[r.pool] -= 1
            got[r.pool][1] += 1
        else:
            budget[r.app] -= 1
        heapq.heappush(heap, (level + 1, i, r))
    return {p: (n, f) for p, (n, f) in got.items()}


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Request], Ledger]:
    n = draw(st.integers(1, 6))
    apps = [f"a{i}" for i in range(draw(st.integers(1, 3)))]
    pools = [(f"p{i}", draw(st.sampled_from(apps))) for i in range(n)]
    per_app = {a: draw(st.integers(0, 30)) for a in apps if draw(st.booleans())}
    ledger = Ledger(
        caps=Caps(draw(st.integers(0, 60)), per_app),
        pool_cap={p: draw(st.integers(0, 25)) for p, _ in pools},
        pool_live={p: draw(st.integers(0, 12)) for p, _ in pools},
        budget={a: draw(st.integers(0, 8)) for a in apps},
    )
    for p, a in pools:
        ledger.app_live[a] = ledger.app_live.get(a, 0) + ledger.pool_live[p]
        ledger.global_live += ledger.pool_live[p]
    requests = [
        Request(p, a, want := draw(st.integers(0, 20)), draw(st.integers(0, want)),
                (draw(st.sampled_from([0.0, -10.0, -30.0])), i))
        for i, (p, a) in enumerate(pools)
    ]
    return requests, ledger


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_steps_equal_unit_by_unit_water_filling(world: tuple[list[Request], Ledger]) -> None:
    requests, ledger = world
    grants = allocate(requests, ledger)
    assert {p: (g.count, g.free) for p, g in grants.items()} == reference(requests, ledger)
