"""The recorder on real Redis: enqueues from message bodies, job ends from the runners' events,
machine changes between listings, and rotation of the continuous trace."""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis

from scaler.config import Settings, parse_settings
from scaler.jobs.keys import recent_jobs_key
from scaler.policy.types import MachineView
from scaler.replay.recorder import TraceRecorder, TraceWriter, machine_changes
from scaler.replay.trace import EnqueueEvent, Header, JobEndEvent, read_trace
from tests.scaler_harness import enqueue


def _settings(redis_url: str, prefix: str, queue: str) -> Settings:
    return parse_settings({
        "redis": {"url": redis_url, "namespace": f"{prefix}-ns", "prefix": prefix},
        "pools": [{"name": "p", "app": "a", "queues": [queue], "image": "x"}],
    }, {})


async def test_a_poll_records_new_enqueues_and_job_ends_once(
    redis_url: str, redis_prefix: str, aredis: aioredis.Redis, tmp_path: Path,
) -> None:
    settings = _settings(redis_url, redis_prefix, "q")
    out = tmp_path / "t.jsonl"
    writer = TraceWriter(out, lambda now: Header(now, scaler_id="x"))
    rec = TraceRecorder(settings, aredis, writer)
    mid = enqueue(redis_url, f"{redis_prefix}-ns", redis_prefix, "q", "record", "k", "v",
                  fly_machine={"cpus": 2, "memory_mb": 1024})
    first = await rec.poll()
    assert [type(e) for e in first] == [EnqueueEvent]
    assert first[0].message_id == mid and first[0].options == {"cpus": 2, "memory_mb": 1024}
    assert await rec.poll() == []  # seen once
    # a job that ended between polls, its body already gone: recorded from its job event
    event = {"pool": "p", "queue": "q", "outcome": "done", "message_id": "fast-one",
             "launch": 1, "enqueued_at": 1_000_000, "started_at": 1_003_000,
             "finished_at": 1_013_500, "machine_id": "m1"}
    await aredis.lpush(recent_jobs_key(redis_prefix, "q"), json.dumps(event))
    second = await rec.poll()
    assert second == [
        EnqueueEvent(1000.0, "q", "fast-one"),
        JobEndEvent(1013.5, "q", "fast-one", "done", pool="p", enqueued_at=1000.0,
                    started_at=1003.0, run_s=10.5, machine_id="m1", launch=1),
    ]
    assert await rec.poll() == []
    writer.close()
    trace = read_trace(out)
    assert trace.header.scaler_id == "x"
    assert {e.message_id for e in trace.enqueues} == {mid, "fast-one"}


def test_listings_become_created_started_and_gone_events() -> None:
    booting = MachineView(id="m1", name="n", app="a", pool="p", state="created",
                          created_at=10.0)
    started = MachineView(id="m1", name="n", app="a", pool="p", state="started",
                          created_at=10.0, started_at=12.5)
    assert [(e.event, e.t) for e in machine_changes({}, {"m1": booting}, 11.0)] == [
        ("created", 10.0)]
    assert [(e.event, e.t) for e in machine_changes({"m1": booting}, {"m1": started}, 13.0)] \
        == [("started", 12.5)]
    assert machine_changes({"m1": started}, {"m1": started}, 14.0) == []
    assert [(e.event, e.t) for e in machine_changes({"m1": started}, {}, 20.0)] == [
        ("gone", 20.0)]


def test_the_continuous_trace_rotates_and_keeps_the_newest(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    path = tmp_path / "traces" / "trace.jsonl"
    writer = TraceWriter(path, lambda t: Header(t), rotate_every=60.0, keep=2,
                         clock=lambda: now[0])
    for n in range(5):
        writer.write([EnqueueEvent(now[0], "q", f"m{n}")])
        now[0] += 61.0
    writer.close()
    rotated = sorted(p.name for p in path.parent.glob("trace.*.jsonl"))
    assert len(rotated) == 2  # the two newest of four rotated files
    assert rotated[-1] == "trace.20231114T221623.jsonl"  # opened 3 x 61 s after the first
    assert [e.message_id for e in read_trace(path).enqueues] == ["m4"]
    assert [e.message_id for e in read_trace(path.parent / rotated[-1]).enqueues] == ["m3"]
