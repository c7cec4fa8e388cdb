"""Worker pools end to end: dramatiq drain workers scaled from queue depth, down to zero, with a
warm stopped machine started (not created) when work comes back."""

from __future__ import annotations

import pytest

from tests.e2e.world import World
from tests.scaler_harness import ROOT, ScalerHarness, eventually

pytestmark = pytest.mark.e2e


def test_worker_pool_scales_from_zero_to_zero_and_reuses_warm_machines(world: World) -> None:
    w = world
    pool = {
        "name": "workers", "mode": "worker", "app": w.app, "queues": [w.queue],
        "max_machines": 3, "image": "local/sample:latest",
        "cmd": ["python", "-m", "workers.runner", "--drain"],
        "env": {"SCALER_ACTORS": "tests.apps.sample_tasks", "REDIS_URL": w.redis_url,
                "SAMPLE_QUEUE": w.queue, "PYTHONPATH": str(ROOT), "FLY_SCALER_PREFIX": w.prefix},
        "jobs_per_machine": 2, "idle_timeout": "1s", "min_lifetime": "0s", "warm_machines": 1,
        "boot_timeout": "20s",
    }
    settings = w.settings(pools=[pool])
    key = f"{w.ns}:out"
    for _i in range(6):
        w.enqueue("sleeper", key, 0.3)
    harness = ScalerHarness(settings).start()
    try:
        eventually(lambda: w.values(key).count("done") == 6, timeout=90,
                   what="first batch done")
        # Idle workers exit; one stays as a warm stopped machine, the others are destroyed.
        eventually(lambda: [m["state"] for m in w.machines()] == ["stopped"], timeout=60,
                   what="scaled to zero with one warm machine")
        warm_id = w.machines()[0]["id"]
        created_before = len(w.machines(include_deleted=True))
        w.enqueue("sleeper", key, 0.1)
        eventually(lambda: w.values(key).count("done") == 7, timeout=60,
                   what="second batch done")
        started = [m for m in w.machines(include_deleted=True) if m["id"] == warm_id]
    finally:
        harness.stop()
    assert w.values(key).count("start") == 7  # every job ran exactly once
    assert started and started[0]["state"] in ("started", "stopped", "stopping")
    # the warm machine served the second batch: nothing new was created for it
    assert len(w.machines(include_deleted=True)) == created_before
