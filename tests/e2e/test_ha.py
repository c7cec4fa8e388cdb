"""Two scaler replicas on one Redis: one leader acts, the other only watches; every job runs once;
when the leader goes, the follower takes over."""

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


def _launches(h: ScalerHarness) -> float:
    assert h.service is not None
    total = 0.0
    for metric in h.service.metrics.registry.collect():
        if metric.name == "fly_scaler_launches":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def test_one_leader_acts_and_a_follower_takes_over(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    api = fly_client(local_api.url, local_api.token)
    app = create_app(api)
    queue = f"h{uuid.uuid4().hex[:8]}"
    ns, prefix = redis_prefix, f"{redis_prefix}fs"
    settings = make_settings(
        api_url=local_api.url, token=local_api.token, redis_url=redis_url, namespace=ns,
        prefix=prefix, app=app, queue=queue, scaler={"leader_ttl": "2s"},
    )
    r = redis_client(redis_url)
    key = f"{ns}:out"
    a = ScalerHarness(settings, owner="replica-a").start()
    eventually(lambda: a.service is not None and a.service.elector.is_leader.is_set(),
               timeout=20, what="replica a leads")
    b = ScalerHarness(settings, owner="replica-b").start()
    stopped: list[ScalerHarness] = []
    try:
        for i in range(4):
            enqueue(redis_url, ns, prefix, queue, "record", key, f"x{i}")
        eventually(lambda: r.llen(key) == 4, timeout=60, what="first jobs ran")
        assert _launches(a) == 4
        assert _launches(b) == 0  # the follower never acted
        assert b.service is not None
        # nor did it spend the shared rate budget on listings
        assert b.service.metrics.registry.get_sample_value(
            "fly_scaler_fly_api_requests_total", {"action": "Machines_list", "code": "200"}
        ) is None
        a.stop()
        stopped.append(a)
        assert b.service is not None
        eventually(lambda: b.service is not None and b.service.elector.is_leader.is_set(),
                   timeout=20, what="replica b took over")
        for i in range(4, 7):
            enqueue(redis_url, ns, prefix, queue, "record", key, f"x{i}")
        eventually(lambda: r.llen(key) == 7, timeout=60, what="later jobs ran")
        eventually(lambda: not machines(api, app), timeout=30, what="no machine left")
        assert _launches(b) == 3
    finally:
        for h in (a, b):
            if h not in stopped:
                h.stop()
    values: Any = sorted(v.split("@")[0] for v in r.lrange(key, 0, -1))
    assert values == sorted(f"x{i}" for i in range(7))
