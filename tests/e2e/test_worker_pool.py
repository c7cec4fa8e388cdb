"""Worker pools end to end: dramatiq drain workers scaled from queue depth, down to zero, with a
warm stopped machine started (not created) when work comes back."""

from __future__ import annotations

import uuid

import pytest

from scaler.local.server import LocalAPIServer
from tests.scaler_harness import (
    ROOT,
    ScalerHarness,
    create_app,
    enqueue,
    eventually,
    fly_client,
    machines,
    make_settings,
    redis_client,
)

pytestmark = pytest.mark.e2e


def test_worker_pool_scales_from_zero_to_zero_and_reuses_warm_machines(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    api = fly_client(local_api.url, local_api.token)
    app = create_app(api)
    queue = f"w{uuid.uuid4().hex[:8]}"
    ns, prefix = redis_prefix, f"{redis_prefix}fs"
    r = redis_client(redis_url)
    pool = {
        "name": "workers", "mode": "worker", "app": app, "queues": [queue],
        "max_machines": 3, "image": "local/sample:latest",
        "cmd": ["python", "-m", "workers.runner", "--drain"],
        "env": {"SCALER_ACTORS": "tests.apps.sample_tasks", "REDIS_URL": redis_url,
                "SAMPLE_QUEUE": queue, "PYTHONPATH": str(ROOT), "FLY_SCALER_PREFIX": prefix},
        "jobs_per_machine": 2, "idle_timeout": "1s", "min_lifetime": "0s", "warm_machines": 1,
        "boot_timeout": "20s",
    }
    settings = make_settings(
        api_url=local_api.url, token=local_api.token, redis_url=redis_url, namespace=ns,
        prefix=prefix, app=app, queue=queue, pools=[pool],
    )
    key = f"{ns}:out"
    for _i in range(6):
        enqueue(redis_url, ns, prefix, queue, "sleeper", key, 0.3)
    harness = ScalerHarness(settings).start()
    try:
        eventually(lambda: r.lrange(key, 0, -1).count("done") == 6, timeout=90,
                   what="first batch done")
        # Idle workers exit; one stays as a warm stopped machine, the others are destroyed.
        eventually(lambda: [m["state"] for m in machines(api, app)] == ["stopped"], timeout=60,
                   what="scaled to zero with one warm machine")
        warm_id = machines(api, app)[0]["id"]
        created_before = len(machines(api, app, include_deleted=True))
        enqueue(redis_url, ns, prefix, queue, "sleeper", key, 0.1)
        eventually(lambda: r.lrange(key, 0, -1).count("done") == 7, timeout=60,
                   what="second batch done")
        started = [m for m in machines(api, app, include_deleted=True) if m["id"] == warm_id]
    finally:
        harness.stop()
    assert r.lrange(key, 0, -1).count("start") == 7  # every job ran exactly once
    assert started and started[0]["state"] in ("started", "stopped", "stopping")
    # the warm machine served the second batch: nothing new was created for it
    assert len(machines(api, app, include_deleted=True)) == created_before
