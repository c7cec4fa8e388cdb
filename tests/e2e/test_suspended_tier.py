"""The suspended tier end to end: a worker pool with ``warm_suspended = 1`` on the local Machines
API (real worker processes, frozen with SIGSTOP while suspended): the idle worker is suspended,
not stopped, and new work resumes it; the job runs on that same machine, nothing is created."""

from __future__ import annotations

import pytest

from tests.e2e.world import World
from tests.scaler_harness import ROOT, ScalerHarness, eventually

pytestmark = pytest.mark.e2e


def test_an_idle_worker_is_suspended_and_resumed_for_new_work(world: World) -> None:
    w = world
    pool = {
        "name": "workers", "mode": "worker", "app": w.app, "queues": [w.queue],
        "max_machines": 2, "image": "local/sample:latest",
        "cmd": ["python", "-m", "workers.runner", "--drain"],
        "env": {"SCALER_ACTORS": "tests.apps.sample_tasks", "REDIS_URL": w.redis_url,
                "SAMPLE_QUEUE": w.queue, "PYTHONPATH": str(ROOT), "FLY_SCALER_PREFIX": w.prefix},
        "jobs_per_machine": 1, "idle_timeout": "2s", "min_lifetime": "0s",
        "warm_suspended": 1, "boot_timeout": "20s",
    }
    key = f"{w.ns}:out"
    w.enqueue("record", key, "a")
    harness = ScalerHarness(w.settings(pools=[pool])).start()
    try:
        eventually(lambda: len(w.values(key)) == 1, timeout=60, what="job a ran")
        (first,) = w.machines()
        eventually(lambda: [m["state"] for m in w.machines()] == ["suspended"], timeout=30,
                   what="the idle worker suspended")
        assert not w.r.hexists(f"{w.prefix}:idle", first["id"])  # the mark went with it
        w.enqueue("record", key, "b")
        eventually(lambda: len(w.values(key)) == 2, timeout=30, what="job b ran")
        after = w.machines(include_deleted=True)
        events = [e for m in after for e in m.get("events", [])]
    finally:
        harness.stop()
    assert [v.split("@")[0] for v in w.values(key)] == ["a", "b"]  # each exactly once
    # Both on the one machine, which was resumed, not created again nor booted from stopped.
    assert {v.split("@")[1] for v in w.values(key)} == {first["id"]}
    assert [m["id"] for m in after] == [first["id"]]
    kinds = [(e.get("type"), e.get("status")) for e in events]
    assert ("suspend", "suspended") in kinds and ("start", "started") in kinds
    assert ("exit", "stopped") not in kinds
