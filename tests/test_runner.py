"""The in-machine runner as a real subprocess against real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker

from scaler.jobs.claim_record import SLOT_ENV
from scaler.jobs.claim_record import slot_env as claim_slot_env
from scaler.jobs.claims import Claim, ClaimStore, binding_env, claims_key, launches_key
from scaler.jobs.keys import QueueKeys, finished_machines_key, job_events_key
from scaler.jobs.leader import UNFENCED
from scaler.jobs.outcomes import JobEvent
from scaler.jobs.slots import SlotStore

ROOT = Path(__file__).resolve().parents[1]
Q = "sample"


def send(broker: RedisBroker, actor: str, *args: Any, **options: Any) -> dramatiq.Message[Any]:
    message: dramatiq.Message[Any] = broker.enqueue(dramatiq.Message(Q, actor, args, {}, options))
    return message


def claim_one(redis_url: str, ns: str, prefix: str) -> Claim:
    async def go() -> Claim:
        client = aioredis.Redis.from_url(redis_url)
        try:
            [claim] = await ClaimStore(client, ns, prefix).claim(Q, "jobs", 1, 1, UNFENCED)
            return claim
        finally:
            await client.aclose()

    return asyncio.run(go())


def runner_env(redis_url: str, ns: str, prefix: str, claim: Claim | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "FLY_SCALER_NAMESPACE": ns,
        "FLY_SCALER_PREFIX": prefix,
        "SAMPLE_QUEUE": Q,
        "SCALER_ACTORS": "tests.apps.sample_tasks",
        "FLY_MACHINE_ID": "m-test",
    }
    if claim is not None:
        env.update(binding_env(claim.queue, claim.redis_message_id, claim.launch,
                               namespace=ns, prefix=prefix))
    return env


def job_events(client: redis.Redis, prefix: str) -> list[JobEvent]:
    found = [JobEvent.parse(raw) for raw in client.lrange(job_events_key(prefix), 0, -1)]
    return [e for e in found if e is not None]


def dead_reason(client: redis.Redis, ns: str, prefix: str, rmid: str) -> dict[str, Any]:
    raw = client.hget(QueueKeys(ns, prefix, Q).dead_reasons, rmid)
    assert raw is not None, "no dead-letter reason recorded"
    reason: dict[str, Any] = json.loads(raw)
    return reason


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.runner", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_success_acks_and_completes_the_claim(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:out"
    sent = send(broker, "record", key, "hello")
    claim = claim_one(redis_url, ns, redis_prefix)
    proc = run(runner_env(redis_url, ns, redis_prefix, claim))
    assert proc.returncode == 0, proc.stderr
    assert redis_client.lrange(key, 0, -1) == [b"hello@m-test"]
    assert not redis_client.hexists(f"{ns}:{Q}.msgs", sent.options["redis_message_id"])
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 0
    assert redis_client.hlen(launches_key(redis_prefix, Q)) == 0
    assert redis_client.zcard(f"{ns}:{Q}.XQ") == 0
    [ev] = job_events(redis_client, redis_prefix)
    assert (ev.outcome, ev.message_id, ev.redis_message_id, ev.machine_id, ev.actor) == (
        "done", sent.message_id, sent.options["redis_message_id"], "m-test", "record")
    # its machine is exiting, not an orphan
    assert redis_client.hkeys(finished_machines_key(redis_prefix)) == [b"m-test"]


def test_failure_schedules_a_retry_and_exits_1(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:count"
    sent = send(broker, "flaky", key, 1)
    claim = claim_one(redis_url, ns, redis_prefix)
    proc = run(runner_env(redis_url, ns, redis_prefix, claim))
    assert proc.returncode == 1, proc.stderr
    assert "planned failure" in proc.stderr
    retries = redis_client.hgetall(f"{ns}:{Q}.DQ.msgs")
    assert len(retries) == 1
    retry = json.loads(next(iter(retries.values())))
    assert retry["message_id"] == sent.message_id
    assert retry["options"]["retries"] == 1
    assert retry["options"]["eta"] > 0
    assert not redis_client.hexists(f"{ns}:{Q}.msgs", sent.options["redis_message_id"])
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 0
    [ev] = job_events(redis_client, redis_prefix)
    assert ev.outcome == "failed" and "planned failure" in (ev.reason or "")


def test_final_failure_dead_letters(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:count"
    sent = send(broker, "always_fails", key, retries=1)  # max_retries=1: this is the last try
    claim = claim_one(redis_url, ns, redis_prefix)
    proc = run(runner_env(redis_url, ns, redis_prefix, claim))
    assert proc.returncode == 1, proc.stderr
    rmid = sent.options["redis_message_id"]
    assert redis_client.zscore(f"{ns}:{Q}.XQ", rmid) is not None
    assert redis_client.hexists(f"{ns}:{Q}.XQ.msgs", rmid)
    assert not redis_client.hexists(f"{ns}:{Q}.msgs", rmid)
    assert redis_client.hlen(f"{ns}:{Q}.DQ.msgs") == 0
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 0
    assert redis_client.get(key) == b"1"
    assert dead_reason(redis_client, ns, redis_prefix, rmid)["reason"] == (
        "RuntimeError: always fails")
    [ev] = job_events(redis_client, redis_prefix)
    assert (ev.outcome, ev.cause, ev.reason) == ("dead_lettered", "job_failed",
                                                 "RuntimeError: always fails")


def test_missing_claim_exits_0_without_running(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:out"
    sent = send(broker, "record", key, "x")
    env = runner_env(redis_url, ns, redis_prefix)
    env.update(FLY_SCALER_QUEUE=Q, FLY_SCALER_MESSAGE=sent.options["redis_message_id"])
    proc = run(env)
    assert proc.returncode == 0, proc.stderr
    assert redis_client.llen(key) == 0
    assert redis_client.llen(f"{ns}:{Q}") == 1  # untouched: still ready for whoever claims it


def test_an_undeclared_actor_is_dead_lettered_at_once_with_the_runners_reason(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    sent = send(broker, "no_such_actor")
    claim = claim_one(redis_url, ns, redis_prefix)
    proc = run(runner_env(redis_url, ns, redis_prefix, claim))
    assert proc.returncode == 2
    assert "actor 'no_such_actor' is not declared by 'tests.apps.sample_tasks'" in proc.stderr
    rmid = sent.options["redis_message_id"]
    assert redis_client.zscore(f"{ns}:{Q}.XQ", rmid) is not None  # no launch left to spend
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 0
    assert redis_client.hlen(launches_key(redis_prefix, Q)) == 0
    why = dead_reason(redis_client, ns, redis_prefix, rmid)
    assert why["cause"] == "setup" and "is not declared" in why["reason"]
    [ev] = job_events(redis_client, redis_prefix)
    assert (ev.outcome, ev.cause, ev.machine_id, ev.message_id) == (
        "dead_lettered", "setup", "m-test", sent.message_id)


def test_an_actors_module_that_does_not_import_dead_letters_through_redis_url(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    sent = send(broker, "record", f"{redis_prefix}:out", "x")
    claim = claim_one(redis_url, ns, redis_prefix)
    env = {**runner_env(redis_url, ns, redis_prefix, claim),
           "SCALER_ACTORS": "tests.apps.no_such_module"}
    without_url = {k: v for k, v in env.items() if k != "REDIS_URL"}
    proc = run(without_url)  # nothing to reach Redis with: the scaler relaunches it
    assert proc.returncode == 2
    assert "REDIS_URL is not set" in proc.stderr
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 1
    proc = run(env)
    assert proc.returncode == 2
    assert "cannot import actors module 'tests.apps.no_such_module'" in proc.stderr
    rmid = sent.options["redis_message_id"]
    assert redis_client.zscore(f"{ns}:{Q}.XQ", rmid) is not None
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 0
    assert "cannot import actors module" in dead_reason(redis_client, ns, redis_prefix,
                                                        rmid)["reason"]


def test_other_setup_errors_exit_2_with_a_clear_message(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    sent = send(broker, "record", f"{redis_prefix}:out", "x")
    claim = claim_one(redis_url, ns, redis_prefix)
    env = runner_env(redis_url, ns, redis_prefix, claim)
    redis_client.hdel(f"{ns}:{Q}.msgs", sent.options["redis_message_id"])
    proc = run(env)
    assert proc.returncode == 2
    assert f"{ns}:{Q}.msgs" in proc.stderr
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 0  # nothing left to run
    env.pop("FLY_SCALER_MESSAGE")  # Fly still gives it FLY_MACHINE_ID: not a slot for that
    proc = run(env)
    assert proc.returncode == 2
    assert "FLY_SCALER_MESSAGE not set" in proc.stderr


def _bind(redis_url: str, prefix: str, claim: Claim, machine_id: str) -> str:
    async def go() -> str:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await SlotStore(client, prefix).bind(
                "jobs", claim.queue, claim.redis_message_id, claim.launch, machine_id, 2,
                UNFENCED)
        finally:
            await client.aclose()

    return asyncio.run(go())


def slot_env(redis_url: str, ns: str, prefix: str) -> dict[str, str]:
    """A warm slot's env (as ``slot_request`` sets it), on top of the runner's base env."""
    return {**runner_env(redis_url, ns, prefix), **claim_slot_env(namespace=ns, prefix=prefix)}


def test_on_a_slot_the_runner_finds_its_job_by_machine_id(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:out"
    env = slot_env(redis_url, ns, redis_prefix)
    proc = run(env)
    assert proc.returncode == 0, proc.stderr
    assert "no job bound to slot m-test" in proc.stdout
    for word in ("first", "second"):
        send(broker, "record", key, word)
        claim = claim_one(redis_url, ns, redis_prefix)
        assert _bind(redis_url, redis_prefix, claim, "m-test") == "bound"
        proc = run(env)
        assert proc.returncode == 0, proc.stderr
    assert redis_client.lrange(key, 0, -1) == [b"first@m-test", b"second@m-test"]
    assert redis_client.hlen(claims_key(redis_prefix, Q)) == 0


def test_a_per_job_machine_without_its_job_env_is_a_setup_error_not_a_slot(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    """A machine whose env names no job and does not say it is a slot must not look a binding up
    by its machine id (it would exit 0 as an idle slot, hiding a broken binding env), even when
    a job is bound to that id: it exits 2 saying what is missing, and runs nothing."""
    key = f"{redis_prefix}:out"
    send(broker, "record", key, "bound")
    claim = claim_one(redis_url, ns, redis_prefix)
    assert _bind(redis_url, redis_prefix, claim, "m-test") == "bound"
    for missing in (("FLY_SCALER_MESSAGE",), ("FLY_SCALER_QUEUE", "FLY_SCALER_MESSAGE")):
        env = runner_env(redis_url, ns, redis_prefix, claim)
        for name in missing:
            env.pop(name)
        proc = run(env)
        assert proc.returncode == 2, proc.stderr
        assert f"{' and '.join(missing)} not set" in proc.stderr
        assert "FLY_SCALER_SLOT=1" in proc.stderr  # what a slot would say instead
        assert "no job bound to slot" not in proc.stdout
    assert redis_client.lrange(key, 0, -1) == []  # the bound job was not run by mistake
    record = json.loads(redis_client.hget(claims_key(redis_prefix, Q),
                                          claim.redis_message_id) or b"{}")
    assert record["state"] == "claimed"  # still the slot's to run
    env = slot_env(redis_url, ns, redis_prefix)
    env.pop("FLY_MACHINE_ID")
    proc = run(env)
    assert proc.returncode == 2
    assert "FLY_MACHINE_ID is not set" in proc.stderr


def test_the_job_env_wins_over_a_slot_flag_from_the_pool_env(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    """A per-job machine carrying FLY_SCALER_SLOT=1 (a pool env that set it) still runs the job
    its env names, not a binding."""
    key = f"{redis_prefix}:out"
    send(broker, "record", key, "named")
    claim = claim_one(redis_url, ns, redis_prefix)
    proc = run({**runner_env(redis_url, ns, redis_prefix, claim), SLOT_ENV: "1"})
    assert proc.returncode == 0, proc.stderr
    assert redis_client.lrange(key, 0, -1) == [b"named@m-test"]


def test_sigterm_leaves_the_message_claimed(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:steps"
    sent = send(broker, "sleeper", key, 30)
    claim = claim_one(redis_url, ns, redis_prefix)
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.runner"],
        env=runner_env(redis_url, ns, redis_prefix, claim),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert redis_client.blpop([key], timeout=30) == (key.encode(), b"start")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    rmid = sent.options["redis_message_id"]
    assert redis_client.hexists(f"{ns}:{Q}.msgs", rmid)
    record = json.loads(redis_client.hget(claims_key(redis_prefix, Q), rmid) or b"{}")
    assert (record["state"], record["machine_id"]) == ("running", "m-test")


def test_drain_mode_runs_everything_then_exits_when_idle(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:out"
    for i in range(3):
        send(broker, "record", key, str(i))
    env = runner_env(redis_url, ns, redis_prefix)
    env["FLY_SCALER_MIN_LIFETIME"] = "0.0"  # as the scaler sets it for min_lifetime = "0s"
    proc = run(env, "--drain", "--queues", Q, "--threads", "2", "--idle-timeout", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert sorted(redis_client.lrange(key, 0, -1)) == [b"0@m-test", b"1@m-test", b"2@m-test"]
    assert redis_client.llen(f"{ns}:{Q}") == 0
    assert redis_client.hlen(f"{ns}:{Q}.msgs") == 0


def test_drain_mode_stays_its_min_lifetime_however_idle(
    redis_url: str, ns: str, redis_prefix: str
) -> None:
    env = runner_env(redis_url, ns, redis_prefix)
    began = time.monotonic()
    proc = run(env, "--drain", "--queues", Q, "--idle-timeout", "0.1", "--min-lifetime", "1.5")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - began >= 1.5  # idle from the start, yet it stayed


def test_time_limit_is_enforced(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:steps"
    sent = send(broker, "too_slow", key)
    claim = claim_one(redis_url, ns, redis_prefix)
    proc = run(runner_env(redis_url, ns, redis_prefix, claim))
    assert proc.returncode == 1, proc.stderr
    assert "TimeLimitExceeded" in proc.stderr
    assert redis_client.lrange(key, 0, -1) == [b"start"]
    assert redis_client.zscore(f"{ns}:{Q}.XQ", sent.options["redis_message_id"]) is not None


def test_a_redis_blip_at_start_is_waited_out_not_a_crash() -> None:
    import redis.exceptions

    from workers.bound import _retry_redis
    from workers.runtime import Stop

    calls: list[int] = []

    def mark() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise redis.exceptions.ConnectionError("Connection refused")
        return True

    assert _retry_redis(mark, Stop()) is True
    assert len(calls) == 3
    stopping = Stop()
    stopping.event.set()  # a SIGTERM while waiting: the error is raised, not waited out
    calls.clear()
    with pytest.raises(redis.exceptions.ConnectionError):
        _retry_redis(mark, stopping)


def _exit_process_script(body: str) -> subprocess.CompletedProcess[str]:
    code = "import atexit, sys, threading, time\nfrom workers.runtime import exit_process\n" + body
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_exit_process_keeps_the_code_the_hooks_and_buffered_output() -> None:
    proc = _exit_process_script(
        "atexit.register(lambda: print('hook ran'))\n"
        "print('buffered', end=' ')\n"
        "sys.stderr.write('to stderr')\n"
        "exit_process(3)\n"
        "print('never')\n"
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "buffered hook ran\n", "to stderr")


def test_exit_process_waits_for_a_non_daemon_thread_as_python_does(tmp_path: Path) -> None:
    out = tmp_path / "late"
    proc = _exit_process_script(
        "def late():\n"
        "    time.sleep(0.3)\n"
        f"    open({str(out)!r}, 'w').write('written')\n"
        "threading.Thread(target=late).start()\n"
        "exit_process(0)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "written"
