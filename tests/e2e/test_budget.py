"""Cost budgets end to end: real Redis, the local Machines API and the scaler service. Under a
budget already spent, jobs wait in their queue (no machine, nothing dead-lettered), a restarted
scaler still knows the hour's spend, and once that spend leaves the rolling hour the jobs run."""

from __future__ import annotations

import json
import math
import time

import pytest

from scaler.commands.status import format_status
from scaler.jobs.keys import QueueKeys, spend_at_key, spend_bucket_key, status_key
from tests.e2e.world import World
from tests.scaler_harness import ScalerHarness, eventually

pytestmark = pytest.mark.e2e


def _refused(h: ScalerHarness) -> float:
    assert h.service is not None
    value = h.service.metrics.registry.get_sample_value(
        "fly_scaler_decisions_not_taken_total", {"pool": "jobs", "reason": "budget"}
    )
    return value or 0.0


def _refuses_for_a_while(h: ScalerHarness) -> None:
    """Several ticks refuse for budget (the resync ticks every second), and each time the
    jobs are still in the queue and no machine exists."""
    seen = 0.0
    for _ in range(3):
        seen = eventually(lambda s=seen: (v := _refused(h)) > s and v, timeout=15,
                          what="a launch refused for budget")


def test_jobs_wait_under_a_spent_budget_and_run_when_the_hour_rolls(world: World) -> None:
    w = world
    out_key = f"{w.ns}:out"
    settings = w.settings(sections={"costs": {"budget_per_hour": 0.5}})
    prefix = settings.redis.prefix
    # The hour so far cost 1.00 USD (as the ledger would have recorded it): written in this
    # minute's bucket and the next two, so it holds wherever in the minute the test runs.
    minute = math.floor(time.time() / 60)
    minutes = range(minute, minute + 3)
    for m in minutes:
        w.r.hset(spend_bucket_key(prefix, m), mapping={"total": 1.0})
    w.r.set(spend_at_key(prefix), repr(time.time()))
    n = 3
    for i in range(n):
        w.enqueue("record", out_key, f"job{i}")
    keys = QueueKeys(namespace=w.ns, queue=w.queue, prefix=prefix)

    for _ in range(2):  # the second run is a restarted scaler: it reads the hour from Redis
        h = ScalerHarness(settings).start()
        try:
            _refuses_for_a_while(h)
            assert h.service is not None
            reg = h.service.metrics.registry
            scope = {"scope": "global", "name": "all"}
            assert reg.get_sample_value("fly_scaler_budget_per_hour_usd", scope) == 0.5
            assert (reg.get_sample_value("fly_scaler_spend_rolling_hour_usd", scope) or 0) >= 1.0
            assert (reg.get_sample_value("fly_scaler_budget_remaining_usd", scope) or 0) <= -0.5
            status = json.loads(w.r.get(status_key(prefix)) or "{}")
            text = format_status(status)
            assert "budgets (USD per rolling hour):" in text and "of 0.50 (left -" in text, text
            assert any(d["reason"] == "budget" for d in status["decisions"])
        finally:
            h.stop()
        assert w.machines(include_deleted=True) == []
        assert w.r.llen(keys.ready) == n and w.r.zcard(keys.dead) == 0
        assert w.values(out_key) == []

    # The hour rolls: that spend is now more than an hour old.
    for m in minutes:
        w.r.rename(spend_bucket_key(prefix, m), spend_bucket_key(prefix, m - 61))
    h = ScalerHarness(settings).start()
    try:
        eventually(lambda: w.r.llen(out_key) >= n, timeout=60, what="all jobs ran")
        eventually(lambda: not w.machines(), timeout=30, what="no machine left")
        assert h.service is not None
        reg = h.service.metrics.registry
        eventually(lambda: reg.get_sample_value("fly_scaler_job_cost_usd_count",
                                                {"pool": "jobs"}) == n,
                   timeout=10, what="each job's cost in the histogram")
        assert (reg.get_sample_value("fly_scaler_job_cost_usd_sum", {"pool": "jobs"}) or 0) > 0
    finally:
        h.stop()
    assert sorted(v.split("@")[0] for v in w.values(out_key)) == [f"job{i}" for i in range(n)]
    assert w.r.zcard(keys.dead) == 0
