"""Invariants under faults: the local Machines API answers 5xx, 429s and ambiguous creates at
random (seeded) and some machines crash at boot; every job still runs exactly once, no job gets
two machines for one launch, nothing is left, and the caps hold."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
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

FAULTS = {
    "*": {"error_rate": 0.15, "error_status": 503, "rate_limit_rate": 0.05},
    "Machines_create": {"ambiguous_rate": 0.2, "ambiguous_mode": "drop"},
    "machines": {"crash_rate": 0.15, "crash_after": 0.0, "crash_exit_code": 137},
}


def test_jobs_run_exactly_once_through_api_faults_and_crashes(
    local_api_factory: Callable[..., LocalAPIServer], redis_url: str, redis_prefix: str
) -> None:
    api_server = local_api_factory(faults=FAULTS, seed=7)
    api = fly_client(api_server.url, api_server.token)
    app = eventually(lambda: _try_create_app(api), timeout=30, what="the app created")
    queue = f"c{uuid.uuid4().hex[:8]}"
    ns, prefix = redis_prefix, f"{redis_prefix}fs"
    r = redis_client(redis_url)
    settings = make_settings(
        api_url=api_server.url, token=api_server.token, redis_url=redis_url, namespace=ns,
        prefix=prefix, app=app, queue=queue, max_machines=4,
        extra_pool={"max_launches": 10}, scaler={"claim_grace": "1s"},
    )
    key = f"{ns}:out"
    n = 12
    for i in range(n):
        enqueue(redis_url, ns, prefix, queue, "record", key, f"j{i}")
    harness = ScalerHarness(settings).start()
    try:
        eventually(lambda: r.llen(key) >= n, timeout=150, what="every job ran")
        api.post("/_admin/faults", json={})  # let the clean-up calls through
        eventually(lambda: not _live(api, app), timeout=60, what="no machine left")
    finally:
        harness.stop()
    runs = Counter(v.split("@")[0] for v in r.lrange(key, 0, -1))
    assert runs == Counter({f"j{i}": 1 for i in range(n)}), "a job ran twice or never"
    all_machines = machines(api, app, include_deleted=True)
    per_launch = Counter(m["name"] for m in all_machines)
    assert max(per_launch.values()) == 1, "one launch of a job got two machines"
    assert r.zcard(f"{ns}:{queue}.XQ") == 0


def _try_create_app(api: httpx.Client) -> str | None:
    try:
        return create_app(api)
    except AssertionError:
        return None  # a faulted answer: try again


def _live(api: httpx.Client, app: str) -> list[dict[str, Any]]:
    return [m for m in machines(api, app) if m["state"] not in ("destroyed", "destroying")]
