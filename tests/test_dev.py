"""Unit tests of the pieces of ``scaler dev``: Redis choice, config, producer, example app,
machine tracking, summary and view."""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.console import Console

from scaler.commands import dev as dev_command
from scaler.dev.config import (
    ACTORS_MODULE,
    JOBS_POOL,
    WORKERS_POOL,
    DevIds,
    dev_settings,
    run_keys_pattern,
)
from scaler.dev.example_app import ResultKeys, build, record_run
from scaler.dev.producer import JobSpec, Producer, SentJob, planned_jobs
from scaler.dev.redis import (
    EmbeddedRedis,
    RedisUnavailable,
    answers,
    delete_keys,
    resolve_redis,
)
from scaler.dev.session import DevOptions
from scaler.dev.summary import compute_summary, format_summary, percentile
from scaler.dev.tracker import MachineTracker
from scaler.dev.view import DecisionRow, QueueRow, Snapshot, plain_line, render
from scaler.loop.machines import worker_request

DEAD_URL = "redis://127.0.0.1:1/0"  # port 1: nothing listens there
needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None,
                                        reason="redis-server is not installed")


# --- Redis ----------------------------------------------------------------------------------


@needs_redis_server
def test_embedded_redis_starts_answers_and_stops() -> None:
    server = EmbeddedRedis()
    url = server.start()
    try:
        assert url.startswith("redis://127.0.0.1:")
        assert answers(url)
        client = redis.Redis.from_url(url)
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        client.close()
        pid = server.pid
        assert pid is not None and Path(f"/proc/{pid}").exists()
    finally:
        server.stop()
    assert server.pid is None
    assert not answers(url, timeout=0.5)
    server.stop()  # idempotent


def test_embedded_redis_without_binary_says_how_to_install() -> None:
    with pytest.raises(RedisUnavailable, match="apt-get install redis-server"):
        EmbeddedRedis(binary="/nonexistent/redis-server")


def test_explicit_url_that_does_not_answer_is_an_error_naming_the_option() -> None:
    with pytest.raises(RedisUnavailable, match="--redis-url") as exc:
        resolve_redis("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(exc.value)


def test_env_redis_that_answers_is_used_as_is(redis_url: str) -> None:
    choice = resolve_redis(None, env={"REDIS_URL": redis_url})
    assert choice.url == redis_url
    assert choice.embedded is None
    choice.close()


def test_no_redis_and_no_binary_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisUnavailable, match="apt-get install redis-server"):
        resolve_redis(None, env={"REDIS_URL": DEAD_URL})


@needs_redis_server
def test_falls_back_to_an_embedded_redis_when_nothing_answers() -> None:
    choice = resolve_redis(None, env={"REDIS_URL": DEAD_URL})
    try:
        assert choice.embedded is not None
        assert answers(choice.url)
        assert "embedded redis-server" in choice.description
    finally:
        choice.close()
    assert not answers(choice.url, timeout=0.5)


# --- config ---------------------------------------------------------------------------------


def test_dev_settings_have_a_per_job_pool_and_a_scale_to_zero_worker_pool(
    redis_url: str,
) -> None:
    ids = DevIds.new()
    s = dev_settings(api_url="http://127.0.0.1:4280", token="tok", redis_url=redis_url, ids=ids)
    jobs, workers = s.pool(JOBS_POOL), s.pool(WORKERS_POOL)
    assert (jobs.mode, jobs.queues) == ("per-job", ("jobs",))
    assert (workers.mode, workers.queues) == ("worker", ("default",))
    assert (workers.min_machines, workers.jobs_per_machine, workers.idle_timeout,
            workers.warm_machines) == (0, 2, 3.0, 1)
    assert jobs.env["SCALER_ACTORS"] == ACTORS_MODULE == workers.env["SCALER_ACTORS"]
    assert jobs.cmd == ("python", "-m", "workers.runner")
    assert s.redis.namespace == ids.namespace
    assert s.redis.prefix.startswith(ids.namespace + ":")
    assert s.scaler.id == ids.namespace
    env = worker_request(workers, s).config.env or {}
    assert env["FLY_SCALER_MODE"] == "drain"
    assert env["FLY_SCALER_PREFIX"] == ids.prefix


def test_namespace_is_random_per_run_and_validated() -> None:
    assert DevIds.new().namespace != DevIds.new().namespace
    assert DevIds.new().namespace.startswith("dev-")
    with pytest.raises(ValueError, match="--namespace"):
        DevIds.new("has space")


def test_run_keys_pattern_matches_the_run_only(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    ids = DevIds.new(f"{redis_prefix}dev")
    mine = [f"{ids.namespace}:jobs", f"{ids.prefix}:status"]
    others = [f"{redis_prefix}dev2:jobs", f"{redis_prefix}devx", f"{redis_prefix}de:v"]
    for key in mine + others:
        redis_client.set(key, "1")
    found = {k.decode() for k in redis_client.scan_iter(match=run_keys_pattern(ids))}
    assert found == set(mine)


def test_delete_keys_deletes_the_matching_keys_in_batches(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    mine = [f"{redis_prefix}run:{i}" for i in range(7)]
    kept = f"{redis_prefix}other"
    for key in [*mine, kept]:
        redis_client.set(key, "1")
    assert delete_keys(redis_client, f"{redis_prefix}run:*", batch=3) == 7
    assert redis_client.exists(*mine) == 0
    assert redis_client.exists(kept) == 1


# --- producer and example app ---------------------------------------------------------------


def test_planned_jobs_split_across_both_kinds() -> None:
    jobs = planned_jobs(20)
    assert len({j.job_id for j in jobs}) == 20
    assert sum(j.kind == "thumbnail" for j in jobs) == 10
    assert sum(j.kind == "send_email" for j in jobs) == 10
    assert any(j.big for j in jobs)
    assert not any(j.big for j in jobs if j.kind == "send_email")
    assert [j.kind for j in planned_jobs(3)] == ["thumbnail", "send_email", "thumbnail"]
    with pytest.raises(ValueError, match="--jobs"):
        planned_jobs(-1)


def test_producer_enqueues_with_machine_options(
    redis_url: str, redis_client: redis.Redis, redis_prefix: str
) -> None:
    ns = f"{redis_prefix}dev"
    app = build(redis_url, ns, f"{ns}:scaler")
    producer = Producer(app, clock=lambda: 1000.0)
    try:
        sent = [producer.send(spec) for spec in planned_jobs(6)]
    finally:
        app.broker.close()
    assert [s.sent_at for s in sent] == [1000.0] * 6
    assert redis_client.hlen(f"{ns}:jobs.msgs") == 3
    assert redis_client.hlen(f"{ns}:default.msgs") == 3
    by_id = {s.spec.job_id: s for s in sent}
    big = next(s for s in sent if s.spec.big)
    body = json.loads(redis_client.hget(f"{ns}:jobs.msgs", big.redis_message_id) or b"{}")
    assert body["options"]["fly_machine"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}
    assert "enqueued_at" in body["options"]
    plain = json.loads(
        redis_client.hget(f"{ns}:jobs.msgs", by_id["thumbnail-0"].redis_message_id) or b"{}"
    )
    assert "fly_machine" not in plain["options"]
    assert plain["args"] == ["thumbnail-0"]


def test_record_run_counts_duplicates(redis_client: redis.Redis, redis_prefix: str) -> None:
    keys = ResultKeys(redis_prefix)
    assert record_run(redis_client, keys, "a") == 1
    assert record_run(redis_client, keys, "b") == 1
    assert record_run(redis_client, keys, "a") == 2
    assert int(redis_client.get(keys.done) or 0) == 3
    assert int(redis_client.get(keys.duplicates) or 0) == 1
    assert redis_client.hgetall(keys.runs) == {b"a": b"2", b"b": b"1"}


# --- tracker and summary --------------------------------------------------------------------


@dataclass
class FakeMachine:
    id: str
    state: str
    created_at: float
    pool: str
    job: str | None = None
    app: str = "app"
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        md = {"fly_scaler_pool": self.pool}
        if self.job:
            md["fly_scaler_job"] = self.job
        self.config = {"metadata": md}


def test_tracker_counts_created_max_live_and_first_machine_per_job() -> None:
    t = MachineTracker()
    t.observe([FakeMachine("m1", "started", 10.0, "jobs", "j1"),
               FakeMachine("m2", "created", 11.0, "jobs", "j2"),
               FakeMachine("w1", "started", 10.5, "workers")])
    t.observe([FakeMachine("m1", "destroyed", 10.0, "jobs", "j1"),
               FakeMachine("m2", "started", 11.0, "jobs", "j2"),
               FakeMachine("m3", "started", 12.0, "jobs", "j1"),  # a relaunch of j1
               FakeMachine("w1", "stopped", 10.5, "workers")])
    assert t.created() == {"jobs": 3, "workers": 1}
    assert t.max_live == {"jobs": 2, "workers": 1}
    assert t.by_state() == {"jobs": {"started": 2}, "workers": {"stopped": 1}}
    assert t.first_created_by_job() == {"j1": 10.0, "j2": 11.0}
    assert sorted(m.id for m in t.not_final()) == ["m2", "m3"]
    assert sorted(m.id for m in t.remaining()) == ["m2", "m3", "w1"]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 7) == 7.0  # no float rounding up past the rank
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="q must be"):
        percentile(values, 0)


def _sent(job_id: str, kind: str, rmid: str, at: float) -> SentJob:
    return SentJob(JobSpec(job_id, kind, False), rmid, at)  # type: ignore[arg-type]


def _tracker() -> MachineTracker:
    t = MachineTracker()
    t.observe([FakeMachine("m1", "destroyed", 100.5, "jobs", "r1"),
               FakeMachine("m2", "destroyed", 103.0, "jobs", "r3"),
               FakeMachine("w1", "stopped", 101.0, "workers")])
    return t


def test_summary_of_a_clean_run_is_ok() -> None:
    sent = [_sent("t0", "thumbnail", "r1", 100.0), _sent("e1", "send_email", "r2", 100.0),
            _sent("t2", "thumbnail", "r3", 101.0)]
    s = compute_summary(sent=sent, runs={"t0": 1, "e1": 1, "t2": 1}, failed=0, send_errors=0,
                        tracker=_tracker(), wall_time_s=12.34,
                        left_by_scaler={"workers": {"stopped": 1}}, destroyed_at_exit=1,
                        machines_left=0)
    assert (s.jobs, s.per_job_jobs, s.worker_jobs, s.runs, s.duplicates, s.missing) == (
        3, 2, 1, 3, 0, 0)
    assert (s.launch_p50_s, s.launch_p99_s) == (0.5, 2.0)
    assert s.machines_created == {"jobs": 2, "workers": 1}
    assert s.ok
    text = format_summary(s)
    assert "jobs:" in text and "3 (2 per-job, 1 worker pool)" in text
    assert "1 stopped (warm)" in text
    assert text.splitlines()[-1].strip() == "result: OK"


def test_summary_reports_duplicates_missing_and_machines_left_running() -> None:
    sent = [_sent("t0", "thumbnail", "r1", 100.0), _sent("e1", "send_email", "r2", 100.0),
            _sent("t2", "thumbnail", "r3", 101.0)]
    s = compute_summary(sent=sent, runs={"t0": 2, "e1": 1}, failed=1, send_errors=0,
                        tracker=_tracker(), wall_time_s=5.0,
                        left_by_scaler={"jobs": {"started": 1}}, destroyed_at_exit=1,
                        machines_left=0, problem="timed out after 5s", target=5)
    assert (s.duplicates, s.missing, s.failed, s.running_left, s.unsent) == (1, 1, 1, 1, 2)
    assert not s.ok
    text = format_summary(s)
    assert "3 (2 per-job, 1 worker pool), 2 of 5 never sent" in text
    last = text.splitlines()[-1]
    for part in ("FAILED", "timed out after 5s", "1 duplicate run", "1 job(s) never ran",
                 "1 machine(s) still running", "2 job(s) never sent"):
        assert part in last


def test_summary_of_a_stopped_endless_run_is_not_judged() -> None:
    sent = [_sent("t0", "thumbnail", "r1", 100.0), _sent("e1", "send_email", "r2", 100.0)]
    s = compute_summary(sent=sent, runs={"t0": 1}, failed=0, send_errors=0, tracker=_tracker(),
                        wall_time_s=5.0, left_by_scaler={}, destroyed_at_exit=0,
                        machines_left=0, checked=False)
    last = format_summary(s).splitlines()[-1].strip()
    assert last == "result: stopped; 1 job(s) had not run yet"


# --- view -----------------------------------------------------------------------------------


def _snapshot() -> Snapshot:
    return Snapshot(
        elapsed=3.25,
        queues={"jobs": QueueRow(ready=4, in_flight=1, delayed=0, claimed=2, dead=0),
                "default": None},
        machines={"jobs": {"started": 2, "created": 1}, "workers": {"stopped": 1}},
        created={"jobs": 5, "workers": 1},
        launches=6, reaps=2, jobs_sent=9, jobs_target=20, jobs_done=7, jobs_failed=1,
        duplicates=0,
        decisions=tuple(
            DecisionRow(float(i), "jobs", "not_taken" if i % 2 else "acted", "launch",
                        "cap_pool", f"decision number {i}")
            for i in range(12)
        ),
        info=(("redis", "redis://127.0.0.1:6379/0"), ("namespace", "dev-abc")),
    )


def test_view_renders_queues_machines_counters_and_decisions() -> None:
    console = Console(record=True, width=120, height=40)
    console.print(render(_snapshot(), max_decisions=5))
    text = console.export_text()
    assert "dev-abc" in text
    assert "sent 9/20  done 7  failed 1" in text
    assert "launches 6  reaps 2" in text
    assert "created=1 started=2" in text and "stopped=1" in text
    row = next(line for line in text.splitlines() if " jobs " in line and " 4 " in line)
    assert row.split()[1:7] == ["jobs", "4", "1", "0", "2", "0"]
    assert "?" in next(line for line in text.splitlines() if "default" in line)
    assert "decision number 11" in text and "decision number 7" in text
    assert "decision number 6" not in text  # only the last five


def test_view_fits_a_small_terminal() -> None:
    from scaler.dev.view import FIXED_LINES

    snap = _snapshot()
    height = 24
    console = Console(record=True, width=100, height=height)
    rows = height - FIXED_LINES - len(snap.info) - len(snap.queues)
    console.print(render(snap, max_decisions=rows))
    assert len(console.export_text().splitlines()) < height


def test_plain_line_for_ci() -> None:
    line = plain_line(_snapshot())
    assert line.startswith("t=3.2s jobs: sent 9/20  done 7")
    assert "jobs[ready=4 inflight=1 claimed=2 dead=0]" in line
    assert "default[?]" in line
    assert "workers[stopped=1]" in line
    assert "\n" not in line


# --- options --------------------------------------------------------------------------------


def test_options_problems_name_the_option() -> None:
    assert DevOptions().problems() == []
    assert "--jobs" in DevOptions(exit_when_done=True).problems()[0]
    assert "--rate" in DevOptions(rate=0).problems()[0]
    assert "--timings" in DevOptions(timings="slow").problems()[0]


def test_command_line_parses_every_option() -> None:
    parser = argparse.ArgumentParser()
    dev_command.add_arguments(parser)
    args = parser.parse_args(["--jobs", "20", "--exit-when-done", "--timeout", "30",
                              "--timings", "realistic", "--redis-url", "redis://h:1/0",
                              "--no-view", "--rate", "2.5", "--namespace", "dev-x"])
    assert (args.jobs, args.exit_when_done, args.timeout, args.timings, args.redis_url,
            args.no_view, args.rate, args.namespace) == (
        20, True, 30.0, "realistic", "redis://h:1/0", True, 2.5, "dev-x")
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate", "0"])


def test_exit_when_done_without_jobs_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(jobs=None, exit_when_done=True, timeout=120.0, timings="fast",
                              redis_url=None, embedded_redis=False, no_view=True, rate=1.0,
                              namespace=f"dev-{uuid.uuid4().hex[:6]}")
    assert dev_command.run(args) == 2
    assert "--exit-when-done needs --jobs" in capsys.readouterr().err
