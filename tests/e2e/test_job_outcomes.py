"""How jobs end, end to end (real Redis, the local Machines API running real runners, the scaler
service): one line per finished job with its message_id and machine, no orphan noise for the
normal path, and no machine spent on a job that cannot run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from scaler.jobs.messages import MessageState, MessageStore
from tests.e2e.world import World
from tests.scaler_harness import ScalerHarness, eventually

pytestmark = pytest.mark.e2e


def _metric(harness: ScalerHarness, name: str, **labels: str) -> float:
    assert harness.service is not None
    return harness.service.metrics.registry.get_sample_value(name, labels) or 0.0


def _status(w: World, message_id: str) -> MessageState | None:
    async def go() -> MessageState | None:
        client = aioredis.Redis.from_url(w.redis_url)
        try:
            return await MessageStore(client, namespace=w.ns, prefix=w.prefix).lookup(message_id)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _finished(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "job finished"]


def test_a_finished_job_is_one_line_and_its_machine_is_not_an_orphan(world: World) -> None:
    w = world
    key = f"{w.ns}:out"
    sent = [w.enqueue("record", key, f"job{i}") for i in range(3)]
    with capture_logs() as logs:
        harness = ScalerHarness(w.settings()).start()
        try:
            eventually(lambda: w.r.llen(key) >= 3, timeout=60, what="all jobs ran")
            eventually(lambda: not w.machines(), timeout=30, what="no machine left")
            eventually(lambda: len(_finished(logs)) == 3, timeout=10, what="three lines")
            # a few more ticks with the machines gone: still nothing said about them
            ticks = _metric(harness, "fly_scaler_ticks_total", trigger="resync")
            eventually(lambda: _metric(harness, "fly_scaler_ticks_total", trigger="resync")
                       >= ticks + 2, timeout=10, what="two more ticks")
        finally:
            harness.stop()
    lines = _finished(logs)
    assert sorted(e["message_id"] for e in lines) == sorted(sent)
    ran_on = {m["id"] for m in w.machines(include_deleted=True)}
    assert all(e["log_level"] == "info" and e["outcome"] == "done" and e["machine"] in ran_on
               and e["run_s"] is not None and e["queue"] == w.queue for e in lines)
    noise = [e for e in logs if e["event"] in ("orphan marked", "machine destroyed")
             or (e["event"] == "decision" and e["kind"] in ("mark_orphan", "reap"))]
    assert noise == []
    state = _status(w, sent[0])
    assert state is not None and state.state == "done" and state.machine_id in ran_on


def test_a_job_for_an_undeclared_actor_costs_one_machine_and_says_why(world: World) -> None:
    w = world
    mid = w.enqueue("no_such_actor")
    with capture_logs() as logs:
        harness = ScalerHarness(w.settings(extra_pool={"max_launches": 3})).start()
        try:
            eventually(lambda: w.r.zcard(f"{w.ns}:{w.queue}.XQ") == 1, timeout=60,
                       what="dead-lettered")
            eventually(lambda: _finished(logs), timeout=10, what="its line")
            eventually(lambda: not w.machines(), timeout=30, what="no machine left")
        finally:
            harness.stop()
        dead = _metric(harness, "fly_scaler_jobs_finished_total", pool="jobs",
                       outcome="dead_lettered")
        failed = _metric(harness, "fly_scaler_jobs_finished_total", pool="jobs",
                         outcome="failed")
        setup = _metric(harness, "fly_scaler_jobs_dead_lettered_total", pool="jobs",
                        reason="setup")
    assert len(w.machines(include_deleted=True)) == 1  # not max_launches of them
    [line] = _finished(logs)
    assert (line["log_level"], line["outcome"], line["message_id"]) == ("warning",
                                                                        "dead_lettered", mid)
    assert "actor 'no_such_actor' is not declared" in line["reason"]
    state = _status(w, mid)
    assert state is not None and state.state == "dead_lettered"
    assert state.reason is not None and "is not declared" in state.reason
    assert (dead, failed, setup) == (1.0, 0.0, 1.0)  # the metrics say what the status says


def test_a_message_past_its_max_age_is_dead_lettered_without_a_machine(world: World) -> None:
    w = world
    key = f"{w.ns}:after"
    old = w.enqueue("record", key, "too old", max_age=1)  # 1 ms: past it by the first claim
    w.enqueue("record", key, "fresh")
    with capture_logs() as logs:
        harness = ScalerHarness(w.settings()).start()
        try:
            eventually(lambda: w.r.llen(key) >= 1, timeout=60, what="the fresh job ran")
            eventually(lambda: len(_finished(logs)) == 2, timeout=10, what="two lines")
        finally:
            harness.stop()
    assert [v.split("@")[0] for v in w.values(key)] == ["fresh"]
    assert len(w.machines(include_deleted=True)) == 1  # the fresh job's only
    [line] = [e for e in _finished(logs) if e["message_id"] == old]
    assert (line["outcome"], line["cause"], line["machine"]) == ("dead_lettered", "max_age", None)
    state = _status(w, old)
    assert state is not None and state.state == "dead_lettered"
    assert state.reason is not None and state.reason.startswith("max_age")
