"""Dead letters: listed with their reason, sent back to the queue as a fresh enqueue of the same
message, purged only when named; ``scaler jobs`` shows and does the same."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from scaler.commands import jobs as jobs_command
from scaler.jobs.dead_letters import DeadLetters
from scaler.jobs.keys import QueueKeys, wake_channel

QUEUE = "reports"


@pytest.fixture
def dead(broker: RedisBroker, redis_client: redis.Redis, ns: str,
         redis_prefix: str) -> Iterator[list[dramatiq.Message[object]]]:
    """Three messages dead-lettered by dramatiq itself (fetched and nacked by a consumer)."""

    @dramatiq.actor(queue_name=QUEUE, broker=broker)
    def build(n: int) -> None:
        raise AssertionError("never run here")

    sent = [build.send(n) for n in range(3)]
    consumer = broker.consume(QUEUE, prefetch=3, timeout=1000)
    got = [next(consumer) for _ in range(3)]
    for m in got:
        consumer.nack(m)
    consumer.close()
    keys = QueueKeys(ns, redis_prefix, QUEUE)
    assert redis_client.zcard(keys.dead) == 3 and redis_client.llen(keys.ready) == 0
    yield sent


def test_dead_letters_are_listed_with_the_scalers_reason(
    dead: list[dramatiq.Message[object]], redis_client: redis.Redis, ns: str, redis_prefix: str
) -> None:
    keys = QueueKeys(ns, redis_prefix, QUEUE)
    rmid = dead[0].options["redis_message_id"]
    redis_client.hset(keys.dead_reasons, rmid, json.dumps(
        {"reason": "machine_gone: the machine exited 2 before taking the job", "at": 1}))
    letters = DeadLetters(redis_client, ns, redis_prefix, QUEUE).newest()
    assert {d.message_id for d in letters} == {m.message_id for m in dead}
    assert {d.actor for d in letters} == {"build"}
    by_id = {d.message_id: d for d in letters}
    assert by_id[dead[0].message_id].reason == (
        "machine_gone: the machine exited 2 before taking the job")
    assert by_id[dead[1].message_id].reason is None


def test_retry_reenqueues_the_same_message_once(
    dead: list[dramatiq.Message[object]], broker: RedisBroker, redis_client: redis.Redis,
    ns: str, redis_prefix: str,
) -> None:
    keys = QueueKeys(ns, redis_prefix, QUEUE)
    first = dead[0]
    redis_client.hset(keys.launches, first.message_id, 3)  # it had used all its launches
    pubsub = redis_client.pubsub()
    pubsub.subscribe(wake_channel(redis_prefix))
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    letters = DeadLetters(redis_client, ns, redis_prefix, QUEUE)

    moved = letters.retry([first.message_id], now_ms=1_700_000_000_000)
    assert moved == [first.options["redis_message_id"]]
    assert letters.retry([first.message_id], now_ms=1) == []  # already back: moved once
    assert redis_client.zcard(keys.dead) == 2
    assert not redis_client.hexists(keys.launches, first.message_id)
    wake = pubsub.get_message(timeout=2)
    assert wake is not None and wake["data"] == QUEUE.encode()
    pubsub.close()

    # dramatiq takes it like any enqueued message: same message_id, a fresh redis id, no eta.
    consumer = broker.consume(QUEUE, prefetch=1, timeout=1000)
    again = next(consumer)
    consumer.close()
    assert again is not None and again.message_id == first.message_id
    assert again.args == first.args
    assert again.options["redis_message_id"] != first.options["redis_message_id"]
    assert again.options["enqueued_at"] == 1_700_000_000_000


def test_purge_deletes_only_what_is_named(
    dead: list[dramatiq.Message[object]], redis_client: redis.Redis, ns: str, redis_prefix: str
) -> None:
    keys = QueueKeys(ns, redis_prefix, QUEUE)
    letters = DeadLetters(redis_client, ns, redis_prefix, QUEUE)
    assert len(letters.purge([dead[1].message_id])) == 1
    assert redis_client.zcard(keys.dead) == 2 and redis_client.hlen(keys.dead_msgs) == 2
    assert len(letters.purge()) == 2
    assert redis_client.zcard(keys.dead) == 0 and redis_client.hlen(keys.dead_msgs) == 0


def run_jobs(config: Path, *words: str) -> int:
    parser = argparse.ArgumentParser()
    jobs_command.add_arguments(parser)
    return jobs_command.run(parser.parse_args(["-c", str(config), *words]))


def test_scaler_jobs_shows_retries_and_refuses_a_blind_purge(
    dead: list[dramatiq.Message[object]], redis_client: redis.Redis, redis_url: str, ns: str,
    redis_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = tmp_path / "scaler.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\nnamespace = "{ns}"\nprefix = "{redis_prefix}"\n'
        f'[[pools]]\nname = "reports"\napp = "a"\nqueues = ["{QUEUE}"]\nimage = "i"\n')
    assert run_jobs(config) == 0
    out = capsys.readouterr().out
    assert f"{QUEUE}: ready=0 delayed=0 claimed=0 dead=3" in out
    assert all(m.message_id in out for m in dead) and "(no reason recorded)" in out

    assert run_jobs(config, "purge", QUEUE) == 2
    assert "--all" in capsys.readouterr().err
    assert redis_client.zcard(QueueKeys(ns, redis_prefix, QUEUE).dead) == 3

    assert run_jobs(config, "retry", QUEUE, dead[2].message_id, "no-such-id") == 1
    captured = capsys.readouterr()
    assert "1 dead letter(s) sent back" in captured.out and "no-such-id" in captured.err
    assert run_jobs(config, "retry", QUEUE) == 0
    assert "2 dead letter(s) sent back" in capsys.readouterr().out
    assert redis_client.llen(QueueKeys(ns, redis_prefix, QUEUE).ready) == 3


async def test_scaler_jobs_shows_the_newest_finished_jobs(
    broker: RedisBroker, redis_client: redis.Redis, redis_url: str, ns: str, redis_prefix: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis.asyncio as aioredis

    from scaler.jobs.claims import ClaimStore, RunnerClaim
    from scaler.jobs.leader import UNFENCED

    sent = [broker.enqueue(dramatiq.Message(QUEUE, "build", (n,), {}, {})) for n in range(2)]
    aredis = aioredis.Redis.from_url(redis_url)
    claims = await ClaimStore(aredis, ns, redis_prefix).claim(QUEUE, "reports", 2, 1000, UNFENCED)
    await aredis.aclose()
    for c, outcome in zip(claims, ("ack", "nack"), strict=True):
        run = RunnerClaim(redis_client, namespace=ns, prefix=redis_prefix, queue=QUEUE,
                          redis_message_id=c.redis_message_id, launch=c.launch)
        assert run.mark_running("m-" + c.message_id[:6], 2000)
        assert run.finish(outcome, 4500, machine_id="m-" + c.message_id[:6],  # type: ignore[arg-type]
                          error="RuntimeError: boom" if outcome == "nack" else None,
                          message_id=c.message_id, actor="build")
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = tmp_path / "scaler.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\nnamespace = "{ns}"\nprefix = "{redis_prefix}"\n'
        f'[[pools]]\nname = "reports"\napp = "a"\nqueues = ["{QUEUE}"]\nimage = "i"\n')
    assert run_jobs(config) == 0
    lines = capsys.readouterr().out.splitlines()
    done = next(line for line in lines if sent[0].message_id in line)
    failed = next(line for line in lines if sent[1].message_id in line and "dead_lettered" in line)
    assert done.split()[0] == "done" and "ran 2.5s" in done
    assert f"on m-{sent[0].message_id[:6]}" in done
    assert failed.split()[0] == "dead_lettered" and failed.endswith("RuntimeError: boom")
    assert lines.index(failed) < lines.index(done)  # newest first
    assert run_jobs(config, "--recent", "0") == 0
    assert sent[0].message_id not in capsys.readouterr().out
