"""Per-job dispatch end to end: real Redis, the local Machines API running real processes, the
scaler service, and `python -m workers.runner` inside each machine."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from scaler.local.server import LocalAPIServer
from tests.scaler_harness import (
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


@pytest.fixture
def world(local_api: LocalAPIServer, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    api = fly_client(local_api.url, local_api.token)
    app = create_app(api)
    queue = f"q{uuid.uuid4().hex[:8]}"
    return {
        "api": api, "app": app, "queue": queue, "redis_url": redis_url,
        "ns": redis_prefix, "prefix": f"{redis_prefix}fs", "local_api": local_api,
        "r": redis_client(redis_url),
    }


def _settings(w: dict[str, Any], **kw: Any) -> Any:
    return make_settings(
        api_url=w["local_api"].url, token=w["local_api"].token, redis_url=w["redis_url"],
        namespace=w["ns"], prefix=w["prefix"], app=w["app"], queue=w["queue"], **kw,
    )




def test_jobs_run_once_each_on_dedicated_machines(world: dict[str, Any]) -> None:
    w = world
    out_key = f"{w['ns']}:out"
    n = 6
    for i in range(n):
        enqueue(w["redis_url"], w["ns"], w["prefix"], w["queue"], "record", out_key, f"job{i}")
    harness = ScalerHarness(_settings(w, max_machines=3)).start()
    try:
        done = eventually(lambda: w["r"].lrange(out_key, 0, -1) if
                          w["r"].llen(out_key) >= n else None, timeout=60, what="all jobs ran")
        eventually(lambda: not [m for m in machines(w["api"], w["app"])], timeout=30,
                   what="no machine left")
    finally:
        harness.stop()
    values = sorted(v.split("@")[0] for v in done)
    assert values == sorted(f"job{i}" for i in range(n))  # each exactly once
    hosts = [v.split("@")[1] for v in done]
    assert len(set(hosts)) == n  # one machine per job
    all_machines = machines(w["api"], w["app"], include_deleted=True)
    assert len(all_machines) == n
    assert all(m["config"]["auto_destroy"] for m in all_machines)
