"""How a job ended, against a real Redis: the scripts that end a job write the job event, the
queue's recent jobs, the message's record (its status for any message, however it was sent) and
the machine it finished on; a set-up failure and a message past its max_age are dead-lettered
without spending launches."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from scaler.jobs.claims import ClaimStore, RunnerClaim
from scaler.jobs.dead_letters import DeadLetters
from scaler.jobs.keys import (
    RECENT_JOBS_MAX,
    QueueKeys,
    finished_machines_key,
    job_events_key,
    message_record_key,
)
from scaler.jobs.leader import UNFENCED
from scaler.jobs.messages import MessageStore
from scaler.jobs.outcomes import JobEvent

NOW = 1_700_000_000_000
Q = "jobs"


@pytest.fixture
def messages(aredis: aioredis.Redis, redis_prefix: str) -> MessageStore:
    return MessageStore(aredis, namespace=f"{redis_prefix}-ns", prefix=redis_prefix)


def enqueue(client: redis.Redis, ns: str, *, born: int = NOW - 5000,
            options: dict[str, Any] | None = None) -> tuple[str, str]:
    """Enqueue like dramatiq's dispatch script (no middleware, so no record): (rmid, message_id)."""
    rmid, mid = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"queue_name": Q, "actor_name": "work", "args": [], "kwargs": {},
            "options": {"redis_message_id": rmid, **(options or {})}, "message_id": mid,
            "message_timestamp": born}
    client.hset(f"{ns}:{Q}.msgs", rmid, json.dumps(body))
    client.rpush(f"{ns}:{Q}", rmid)
    return rmid, mid


def runner(client: redis.Redis, store: ClaimStore, rmid: str, launch: int = 1) -> RunnerClaim:
    return RunnerClaim(client, namespace=store.namespace, prefix=store.prefix, queue=Q,
                       redis_message_id=rmid, launch=launch)


def events(client: redis.Redis, store: ClaimStore) -> list[JobEvent]:
    found = [JobEvent.parse(raw) for raw in client.lrange(job_events_key(store.prefix), 0, -1)]
    return [e for e in found if e is not None]


def recent(client: redis.Redis, store: ClaimStore) -> list[JobEvent]:
    keys = QueueKeys(store.namespace, store.prefix, Q)
    found = [JobEvent.parse(raw) for raw in client.lrange(keys.recent, 0, -1)]
    return [e for e in found if e is not None]


def dead_reason(client: redis.Redis, store: ClaimStore, rmid: str) -> dict[str, Any]:
    raw = client.hget(QueueKeys(store.namespace, store.prefix, Q).dead_reasons, rmid)
    assert raw is not None
    reason: dict[str, Any] = json.loads(raw)
    return reason


async def test_a_finished_job_says_how_it_ended_where_and_under_which_message_id(
    store: ClaimStore, messages: MessageStore, redis_client: redis.Redis
) -> None:
    rmid, mid = enqueue(redis_client, store.namespace)
    [claim] = await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert (await messages.lookup(mid)).state == "claimed"  # type: ignore[union-attr]
    run = runner(redis_client, store, rmid)
    assert run.mark_running("m1", NOW + 10)
    assert run.finish("ack", NOW + 1510, machine_id="m1", message_id=mid, actor="work")
    [ev] = events(redis_client, store)
    assert (ev.pool, ev.queue, ev.outcome, ev.message_id, ev.redis_message_id) == (
        "ci", Q, "done", mid, rmid)
    assert (ev.machine_id, ev.launch, ev.actor, ev.run_s, ev.reason) == ("m1", 1, "work", 1.5,
                                                                         None)
    assert recent(redis_client, store) == [ev]
    assert redis_client.hkeys(finished_machines_key(store.prefix)) == [b"m1"]
    state = await messages.lookup(mid)
    assert state is not None
    assert (state.state, state.machine_id, state.launch, state.reason) == ("done", "m1", 1, None)
    ttl = redis_client.ttl(message_record_key(store.prefix, mid))
    assert 6 * 24 * 3600 < ttl <= 7 * 24 * 3600
    assert claim.machine_name.endswith("-1")


async def test_a_nack_is_a_dead_letter_with_the_jobs_error_in_its_status_and_event(
    store: ClaimStore, messages: MessageStore, redis_client: redis.Redis
) -> None:
    rmid, mid = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    run = runner(redis_client, store, rmid)
    assert run.mark_running("m1", NOW + 10)
    assert run.finish("nack", NOW + 20, machine_id="m1", error="RuntimeError: boom",
                      message_id=mid, actor="work")
    assert redis_client.zscore(f"{store.namespace}:{Q}.XQ", rmid) == NOW + 20
    assert dead_reason(redis_client, store, rmid)["reason"] == "RuntimeError: boom"
    [ev] = events(redis_client, store)
    assert (ev.outcome, ev.cause, ev.reason) == ("dead_lettered", "job_failed",
                                                 "RuntimeError: boom")
    state = await messages.lookup(mid)
    assert state is not None
    assert (state.state, state.reason, state.machine_id) == ("dead_lettered",
                                                             "RuntimeError: boom", "m1")
    # purged from the dead letters, the record still says how it ended
    DeadLetters(redis_client, store.namespace, store.prefix, Q).purge([rmid])
    state = await messages.lookup(mid)
    assert state is not None and (state.state, state.reason) == ("dead_lettered",
                                                                 "RuntimeError: boom")


async def test_an_ack_after_an_error_is_a_failed_attempt_and_its_retry_is_what_status_finds(
    store: ClaimStore, messages: MessageStore, redis_client: redis.Redis
) -> None:
    rmid, mid = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    # dramatiq's Retries re-enqueues the message under a new redis id on the delay queue
    retry = str(uuid.uuid4())
    redis_client.hset(f"{store.namespace}:{Q}.DQ.msgs", retry, json.dumps(
        {"queue_name": f"{Q}.DQ", "actor_name": "work", "args": [], "kwargs": {},
         "message_id": mid, "message_timestamp": NOW, "options": {"eta": NOW + 999}},
        separators=(",", ":")))  # as dramatiq encodes it
    run = runner(redis_client, store, rmid)
    assert run.finish("ack", NOW + 20, machine_id="m1", error="ValueError: once",
                      message_id=mid)
    [ev] = events(redis_client, store)
    assert (ev.outcome, ev.reason, ev.cause) == ("failed", "ValueError: once", None)
    state = await messages.lookup(mid)
    assert state is not None and (state.state, state.eta_ms) == ("queued", NOW + 999)


async def test_a_set_up_failure_dead_letters_at_once_with_the_runners_reason(
    store: ClaimStore, messages: MessageStore, redis_client: redis.Redis
) -> None:
    rmid, mid = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    run = runner(redis_client, store, rmid)
    assert run.mark_running("m1", NOW + 10)
    reason = "actor 'work' is not declared by 'app.tasks'"
    assert not run.abort("m2", reason, NOW + 11)  # another machine's runner may not end it
    assert not runner(redis_client, store, rmid, launch=2).abort("m1", reason, NOW + 11)
    assert run.abort("m1", reason, NOW + 12)
    k = QueueKeys(store.namespace, store.prefix, Q)
    assert redis_client.hlen(k.claims) == 0
    assert not redis_client.hexists(k.launches, mid)  # no launch left to spend
    assert redis_client.zscore(k.dead, rmid) == NOW + 12
    assert dead_reason(redis_client, store, rmid)["cause"] == "setup"
    [ev] = events(redis_client, store)
    assert (ev.outcome, ev.cause, ev.reason, ev.machine_id) == ("dead_lettered", "setup",
                                                                reason, "m1")
    assert redis_client.hexists(finished_machines_key(store.prefix), "m1")
    state = await messages.lookup(mid)
    assert state is not None and (state.state, state.reason) == ("dead_lettered", reason)
    assert not run.abort("m1", reason, NOW + 13)  # once


async def test_a_message_past_its_max_age_is_dead_lettered_at_claim_without_a_claim(
    store: ClaimStore, messages: MessageStore, redis_client: redis.Redis
) -> None:
    old, old_mid = enqueue(redis_client, store.namespace, born=NOW - 5000,
                           options={"max_age": 1000})
    young, _ = enqueue(redis_client, store.namespace, born=NOW - 5000,
                       options={"max_age": 60_000})
    unlimited, _ = enqueue(redis_client, store.namespace, born=NOW - 10**9)
    claims = await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert [c.redis_message_id for c in claims] == [young]  # the old one cost no claim
    k = QueueKeys(store.namespace, store.prefix, Q)
    assert redis_client.zscore(k.dead, old) == NOW
    assert not redis_client.hexists(k.launches, old_mid)
    why = dead_reason(redis_client, store, old)
    assert (why["cause"], why["launches"]) == ("max_age", 0)
    assert why["reason"].startswith("max_age: 5000 ms old")
    [ev] = events(redis_client, store)
    assert (ev.outcome, ev.cause, ev.machine_id, ev.actor) == ("dead_lettered", "max_age",
                                                               None, "work")
    state = await messages.lookup(old_mid)
    assert state is not None and state.state == "dead_lettered"
    assert state.reason is not None and state.reason.startswith("max_age")
    assert [c.redis_message_id for c in await store.claim(Q, "ci", 1, NOW, UNFENCED)] == [
        unlimited]


async def test_the_scalers_own_dead_letter_is_in_the_status_and_recent_jobs_not_the_events(
    store: ClaimStore, messages: MessageStore, redis_client: redis.Redis
) -> None:
    rmid, mid = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert await store.record_machine(Q, rmid, 1, "m1", NOW + 1, UNFENCED)
    assert await store.requeue_or_dead_letter(Q, rmid, "machine_gone", 1, UNFENCED,
                                              NOW + 2) == "dead_lettered"
    assert events(redis_client, store) == []  # the executor counts the scaler's own
    [ev] = recent(redis_client, store)
    assert (ev.outcome, ev.machine_id, ev.message_id) == ("dead_lettered", "m1", mid)
    state = await messages.lookup(mid)
    assert state is not None
    assert (state.state, state.reason, state.machine_id, state.launch) == (
        "dead_lettered", "machine_gone; gave up after 1 launches", "m1", 1)
    # sent back by `scaler jobs retry`: the record follows it to its new redis id
    [moved] = DeadLetters(redis_client, store.namespace, store.prefix, Q).retry(now_ms=NOW + 3)
    assert moved == rmid
    state = await messages.lookup(mid)
    assert state is not None and (state.state, state.reason) == ("queued", None)
    assert state.redis_message_id != rmid


async def test_recent_jobs_are_capped_newest_first(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    for i in range(RECENT_JOBS_MAX + 3):
        rmid, mid = enqueue(redis_client, store.namespace)
        await store.claim(Q, "ci", 1, NOW + i, UNFENCED)
        assert runner(redis_client, store, rmid).finish("ack", NOW + i, message_id=mid)
    kept = recent(redis_client, store)
    assert len(kept) == RECENT_JOBS_MAX
    assert [e.finished_at for e in kept[:2]] == [NOW + RECENT_JOBS_MAX + 2,
                                                 NOW + RECENT_JOBS_MAX + 1]


def test_events_of_runners_from_before_named_outcomes_still_read() -> None:
    ack = JobEvent.parse(json.dumps({"pool": "p", "queue": Q, "outcome": "ack"}))
    nack = JobEvent.parse(json.dumps({"pool": "p", "queue": Q, "outcome": "nack"}))
    assert ack is not None and ack.outcome == "done"
    assert nack is not None and (nack.outcome, nack.cause) == ("dead_lettered", "job_failed")
    assert JobEvent.parse("not json") is None
    assert JobEvent.parse(json.dumps({"pool": "p", "outcome": "exploded"})) is None


async def test_a_url_password_in_an_error_is_not_kept(
    store: ClaimStore, messages: MessageStore, redis_client: redis.Redis
) -> None:
    rmid, mid = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    reason = "cannot import actors module 'app': ConnectionError: redis://default:hunter2@db:6379"
    assert runner(redis_client, store, rmid).abort("m1", reason, NOW + 1)
    state = await messages.lookup(mid)
    assert state is not None and state.reason == (
        "cannot import actors module 'app': ConnectionError: redis://default:***@db:6379")
    assert not any(b"hunter2" in v for k in redis_client.scan_iter(f"{store.prefix}*")
                   if redis_client.type(k) == b"hash" for v in redis_client.hvals(k))
    assert not any(b"hunter2" in raw for raw in redis_client.lrange(
        job_events_key(store.prefix), 0, -1))
