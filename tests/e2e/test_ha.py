"""Two scaler replicas on one Redis: one leader acts, the other only watches; every job runs once;
when the leader goes, the follower takes over."""

from __future__ import annotations

import pytest

from tests.e2e.world import World
from tests.scaler_harness import ScalerHarness, eventually

pytestmark = pytest.mark.e2e


def _launches(h: ScalerHarness) -> float:
    assert h.service is not None
    total = 0.0
    for metric in h.service.metrics.registry.collect():
        if metric.name == "fly_scaler_launches":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def test_one_leader_acts_and_a_follower_takes_over(world: World) -> None:
    w = world
    settings = w.settings(scaler={"leader_ttl": "2s"})
    key = f"{w.ns}:out"
    a = ScalerHarness(settings, owner="replica-a").start()
    eventually(lambda: a.service is not None and a.service.elector.is_leader.is_set(),
               timeout=20, what="replica a leads")
    b = ScalerHarness(settings, owner="replica-b").start()
    stopped: list[ScalerHarness] = []
    try:
        for i in range(4):
            w.enqueue("record", key, f"x{i}")
        eventually(lambda: w.r.llen(key) == 4, timeout=60, what="first jobs ran")
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
            w.enqueue("record", key, f"x{i}")
        eventually(lambda: w.r.llen(key) == 7, timeout=60, what="later jobs ran")
        eventually(lambda: not w.machines(), timeout=30, what="no machine left")
        assert _launches(b) == 3
    finally:
        for h in (a, b):
            if h not in stopped:
                h.stop()
    values = sorted(v.split("@")[0] for v in w.values(key))
    assert values == sorted(f"x{i}" for i in range(7))
