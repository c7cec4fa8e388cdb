"""Invariants under faults: the local Machines API answers 5xx, 429s and ambiguous creates at
random (seeded) and some machines crash at boot; every job still runs exactly once, no job gets
two machines for one launch, nothing is left, and the caps hold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from scaler.local.server import LocalAPIServer
from tests.e2e.world import World
from tests.scaler_harness import ScalerHarness, create_app, eventually

pytestmark = pytest.mark.e2e

FAULTS = {
    "*": {"error_rate": 0.15, "error_status": 503, "rate_limit_rate": 0.05},
    "Machines_create": {"ambiguous_rate": 0.2, "ambiguous_mode": "drop"},
    "machines": {"crash_rate": 0.15, "crash_after": 0.0, "crash_exit_code": 137},
}


def test_jobs_run_exactly_once_through_api_faults_and_crashes(
    local_api_factory: Callable[..., LocalAPIServer], world_on: Callable[..., World]
) -> None:
    w = world_on(local_api_factory(faults=FAULTS, seed=7), create=_create_app_through_faults)
    settings = w.settings(max_machines=4, extra_pool={"max_launches": 10},
                          scaler={"claim_grace": "1s"})
    key = f"{w.ns}:out"
    n = 12
    for i in range(n):
        w.enqueue("record", key, f"j{i}")
    harness = ScalerHarness(settings).start()
    try:
        eventually(lambda: w.r.llen(key) >= n, timeout=150, what="every job ran")
        w.api.post("/_admin/faults", json={})  # let the clean-up calls through
        eventually(lambda: not _live(w), timeout=60, what="no machine left")
    finally:
        harness.stop()
    runs = Counter(v.split("@")[0] for v in w.values(key))
    assert runs == Counter({f"j{i}": 1 for i in range(n)}), "a job ran twice or never"
    all_machines = w.machines(include_deleted=True)
    per_launch = Counter(m["name"] for m in all_machines)
    assert max(per_launch.values()) == 1, "one launch of a job got two machines"
    assert w.r.zcard(f"{w.ns}:{w.queue}.XQ") == 0


def _create_app_through_faults(api: httpx.Client) -> str:
    def attempt() -> str | None:
        try:
            return create_app(api)
        except AssertionError:
            return None  # a faulted answer: try again

    return eventually(attempt, timeout=30, what="the app created")


def _live(w: World) -> list[dict[str, Any]]:
    return [m for m in w.machines() if m["state"] not in ("destroyed", "destroying")]
