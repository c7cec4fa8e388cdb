"""A per-job pool over several Fly apps end to end: the local Machines API with Fly's rate limits
on (1 create/s per app, burst 3), real runner processes, the scaler service. Creates spread over
every app's budget, the pool cap spans the apps, every job runs exactly once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scaler.local.server import LocalAPIServer
from tests.e2e.world import World
from tests.scaler_harness import ScalerHarness, create_app, eventually

pytestmark = pytest.mark.e2e


def test_creates_spread_over_the_apps_and_every_job_runs_once(
    local_api_factory: Callable[..., LocalAPIServer], world_on: Callable[..., World],
) -> None:
    server = local_api_factory(rate_limits="fly")
    w = world_on(server)
    apps = [w.app, create_app(w.api), create_app(w.api)]
    out_key = f"{w.ns}:out"
    n = 9
    for i in range(n):
        w.enqueue("record", out_key, f"job{i}")
    base = w.settings(max_machines=n)
    pool = base.pools[0].model_dump(by_alias=True, exclude_unset=True, exclude={"app"})
    settings = w.settings(pools=[{**pool, "apps": apps}])
    assert settings.pools[0].fly_apps == tuple(apps)
    harness = ScalerHarness(settings).start()
    try:
        done = eventually(lambda: w.values(out_key) if w.r.llen(out_key) >= n else None,
                          timeout=90, what="every job ran")
        # The store directly: the test's own listings would spend the apps' list budget.
        store = server.app.store
        eventually(
            lambda: all(m.state == "destroyed" for a in apps for m in store.machines(a)),
            timeout=30, what="no machine left in any app",
        )
    finally:
        harness.stop()
    assert sorted(v.split("@")[0] for v in done) == sorted(f"job{i}" for i in range(n))
    per_app = {a: len(store.machines(a)) for a in apps}
    assert sum(per_app.values()) == n  # one machine per job, whichever app it landed in
    # Nine jobs over three apps of burst 3: every app's budget was used.
    assert all(k >= 2 for k in per_app.values()), per_app
    assert server.app.store.summary()["rate_limited"].get("Machines_create", 0) == 0
    # Each claim found its machine in its own app: no machine was orphaned or destroyed early.
    names = [m.name for a in apps for m in store.machines(a)]
    assert len(set(names)) == n and all(name.endswith("-1") for name in names)
