"""Claims against a real Redis: atomic, idempotent, fenced, O(1) per message."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from scaler.jobs.claims import (
    ClaimStore,
    RunnerClaim,
    binding_env,
    claims_key,
    dead_reasons_key,
    launches_key,
    machine_name,
)
from scaler.jobs.leader import UNFENCED, Fence, Fenced

NOW = 1_700_000_000_000
Q = "jobs"


def dead_reason(client: redis.Redis, store: ClaimStore, rmid: str) -> dict[str, object]:
    """Why the scaler dead-lettered ``rmid``, as the store recorded it (the key contract)."""
    raw = client.hget(dead_reasons_key(store.prefix, Q), rmid)
    assert raw is not None
    record: dict[str, object] = json.loads(raw)
    return record


def enqueue(
    client: redis.Redis, ns: str, queue: str = Q, *, options: dict[str, object] | None = None
) -> tuple[str, str]:
    """Enqueue like dramatiq's dispatch script does; returns (redis_message_id, message_id)."""
    rmid, mid = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "queue_name": queue,
        "actor_name": "work",
        "args": [12345678901234567890],
        "kwargs": {},
        "options": {"redis_message_id": rmid, **(options or {})},
        "message_id": mid,
        "message_timestamp": NOW - 5000,
    }
    client.hset(f"{ns}:{queue}.msgs", rmid, json.dumps(body, separators=(",", ":")))
    client.rpush(f"{ns}:{queue}", rmid)
    return rmid, mid


def test_machine_name_is_deterministic() -> None:
    rmid = "7642c86a-1111-2222-3333-444455556666"
    assert machine_name("ci", rmid, 2) == "ci-7642c86a111122223333444455556666-2"


async def test_claim_takes_oldest_first_and_records(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    ids = [enqueue(redis_client, ns, options={"fly_machine": {"cpus": 2}}) for _ in range(3)]
    claims = await store.claim(Q, "ci", 2, NOW, UNFENCED)
    assert [c.redis_message_id for c in claims] == [ids[0][0], ids[1][0]]
    first = claims[0]
    assert first.message_id == ids[0][1]
    assert first.launch == 1
    assert first.state == "claimed"
    assert first.claimed_at == NOW
    assert first.machine_name == machine_name("ci", ids[0][0], 1)
    assert first.machine_options == {"cpus": 2}
    # the message body is returned untouched (a big int survives: it was never re-encoded)
    assert first.message["args"] == [12345678901234567890]
    assert redis_client.lrange(f"{ns}:{Q}", 0, -1) == [ids[2][0].encode()]
    listed = await store.list_claims([Q, "other"])
    assert sorted(c.redis_message_id for c in listed[Q]) == sorted(
        c.redis_message_id for c in claims
    )
    assert listed["other"] == []
    assert listed[Q][0].message == {}
    with_bodies = await store.list_claims([Q], with_messages=True)
    assert [c.message["queue_name"] for c in with_bodies[Q]] == [Q, Q]


async def test_claim_skips_stale_ids_and_empty_queue(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    redis_client.rpush(f"{ns}:{Q}", "ghost")
    rmid, _ = enqueue(redis_client, ns)
    claims = await store.claim(Q, "ci", 5, NOW, UNFENCED)
    assert [c.redis_message_id for c in claims] == [rmid]
    assert await store.claim(Q, "ci", 5, NOW, UNFENCED) == []
    assert await store.claim(Q, "ci", 0, NOW, UNFENCED) == []


async def test_same_id_is_never_claimed_twice(store: ClaimStore, redis_client: redis.Redis) -> None:
    ns = store.namespace
    rmid, _ = enqueue(redis_client, ns)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    redis_client.rpush(f"{ns}:{Q}", rmid)  # e.g. a maintenance requeue raced us
    assert await store.claim(Q, "ci", 1, NOW, UNFENCED) == []
    assert redis_client.hlen(claims_key(store.prefix, Q)) == 1


async def test_give_back_restores_head_and_is_idempotent(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    a, _ = enqueue(redis_client, ns)
    b, _ = enqueue(redis_client, ns)
    [claim] = await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert claim.redis_message_id == a
    assert await store.give_back(Q, a, "capacity", UNFENCED) == "requeued"
    assert await store.give_back(Q, a, "capacity", UNFENCED) == "gone"
    assert redis_client.lrange(f"{ns}:{Q}", 0, -1) == [a.encode(), b.encode()]
    [again] = await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert again.launch == 2
    assert again.machine_name.endswith("-2")


async def test_dead_letter_moves_to_xq_with_reason(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    rmid, mid = enqueue(redis_client, ns)
    body = redis_client.hget(f"{ns}:{Q}.msgs", rmid)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert await store.dead_letter(Q, rmid, "fly_machine.cpus: 3 not allowed", UNFENCED, NOW) == (
        "dead_lettered"
    )
    assert redis_client.zscore(f"{ns}:{Q}.XQ", rmid) == NOW
    assert redis_client.hget(f"{ns}:{Q}.XQ.msgs", rmid) == body
    assert not redis_client.hexists(f"{ns}:{Q}.msgs", rmid)
    assert redis_client.hlen(claims_key(store.prefix, Q)) == 0
    assert not redis_client.hexists(launches_key(store.prefix, Q), mid)
    reason = dead_reason(redis_client, store, rmid)
    assert reason["reason"] == "fly_machine.cpus: 3 not allowed"
    assert reason["message_id"] == mid
    assert await store.dead_letter(Q, rmid, "again", UNFENCED, NOW) == "gone"


async def test_requeue_until_max_launches_then_dead_letter(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    rmid, _ = enqueue(redis_client, ns)
    outcomes = []
    for _ in range(3):
        [claim] = await store.claim(Q, "ci", 1, NOW, UNFENCED)
        outcomes.append(
            await store.requeue_or_dead_letter(Q, claim.redis_message_id, "oom", 3, UNFENCED, NOW)
        )
    assert outcomes == ["requeued", "requeued", "dead_lettered"]
    assert dead_reason(redis_client, store, rmid)["reason"] == "oom; gave up after 3 launches"
    assert redis_client.zcard(f"{ns}:{Q}.XQ") == 1
    assert redis_client.llen(f"{ns}:{Q}") == 0
    with pytest.raises(ValueError, match="max_launches"):
        await store.requeue_or_dead_letter(Q, rmid, "oom", 0, UNFENCED, NOW)


async def test_fenced_scripts_refuse_a_stale_leader(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    rmid, _ = enqueue(redis_client, ns)
    lease = f"{store.prefix}:leader"
    redis_client.set(lease, "me:2")
    assert len(await store.claim(Q, "ci", 1, NOW, Fence(lease, "me:2", 2))) == 1
    stale = Fence(lease, "me:1", 1)
    with pytest.raises(Fenced):
        await store.give_back(Q, rmid, "x", stale)
    with pytest.raises(Fenced):
        await store.dead_letter(Q, rmid, "x", stale, NOW)
    with pytest.raises(Fenced):
        await store.requeue_or_dead_letter(Q, rmid, "x", 3, stale, NOW)
    enqueue(redis_client, ns)
    with pytest.raises(Fenced):
        await store.claim(Q, "ci", 1, NOW, stale)
    assert redis_client.llen(f"{ns}:{Q}") == 1  # the refused claim popped nothing


async def test_runner_side_lifecycle(
    store: ClaimStore, redis_client: redis.Redis, redis_url: str
) -> None:
    ns = store.namespace
    rmid, mid = enqueue(redis_client, ns)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    runner = RunnerClaim(
        redis_client, namespace=ns, prefix=store.prefix, queue=Q, redis_message_id=rmid
    )
    assert runner.mark_running("m1", NOW + 10)
    assert not runner.mark_running("m2", NOW + 11)  # someone else owns it
    assert runner.mark_running("m1", NOW + 12)  # the same machine restarting is fine
    assert runner.heartbeat("m1", NOW + 20)
    assert not runner.heartbeat("m2", NOW + 20)
    [claim] = (await store.list_claims([Q]))[Q]
    assert (claim.state, claim.machine_id, claim.started_at, claim.heartbeat_at) == (
        "running",
        "m1",
        NOW + 10,
        NOW + 20,
    )
    assert runner.finish("ack", NOW + 30)
    assert not redis_client.hexists(f"{ns}:{Q}.msgs", rmid)
    assert redis_client.hlen(claims_key(store.prefix, Q)) == 0
    assert not redis_client.hexists(launches_key(store.prefix, Q), mid)
    assert not runner.finish("ack", NOW + 30)
    assert not runner.mark_running("m1", NOW)


async def test_runner_nack_dead_letters_and_none_only_ends_the_claim(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    rmid, _ = enqueue(redis_client, ns)
    [claim] = await store.claim(Q, "ci", 1, NOW, UNFENCED)
    runner = RunnerClaim(redis_client, namespace=ns, prefix=store.prefix, queue=Q,
                         redis_message_id=rmid, launch=claim.launch)
    assert runner.mark_running("m1", NOW)
    assert runner.finish("nack", NOW + 5)
    assert redis_client.zscore(f"{ns}:{Q}.XQ", rmid) == NOW + 5
    other, mid = enqueue(redis_client, ns)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    done = RunnerClaim(redis_client, namespace=ns, prefix=store.prefix, queue=Q,
                       redis_message_id=other)
    assert done.finish("none", NOW + 6)
    assert not done.finish("none", NOW + 7)
    assert redis_client.hexists(f"{ns}:{Q}.msgs", other)  # "none" leaves the message alone
    assert not redis_client.hexists(launches_key(store.prefix, Q), mid)


def test_binding_env() -> None:
    env = binding_env(Q, "r-1", 2, namespace="dramatiq", prefix="fs")
    assert env == {
        "FLY_SCALER_QUEUE": Q,
        "FLY_SCALER_MESSAGE": "r-1",
        "FLY_SCALER_NAMESPACE": "dramatiq",
        "FLY_SCALER_PREFIX": "fs",
        "FLY_SCALER_LAUNCH": "2",
    }


async def test_record_machine_binds_the_claim_to_the_created_machine(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    ns = store.namespace
    rmid, _ = enqueue(redis_client, ns)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert await store.record_machine(Q, rmid, 1, "m1", NOW + 5, UNFENCED)
    assert await store.record_machine(Q, rmid, 1, "m1", NOW + 6, UNFENCED)  # idempotent
    assert not await store.record_machine(Q, rmid, 1, "m2", NOW + 7, UNFENCED)  # bound already
    [claim] = (await store.list_claims([Q]))[Q]
    assert (claim.state, claim.machine_id, claim.updated_at) == ("claimed", "m1", NOW + 6)
    runner = RunnerClaim(
        redis_client, namespace=ns, prefix=store.prefix, queue=Q, redis_message_id=rmid
    )
    assert not runner.mark_running("m2", NOW + 8)  # a stray duplicate machine may not run it
    assert runner.mark_running("m1", NOW + 9)
    assert runner.finish("ack", NOW + 10)
    assert not await store.record_machine(Q, rmid, 1, "m1", NOW + 11, UNFENCED)  # the claim is gone


async def test_record_machine_is_fenced(store: ClaimStore, redis_client: redis.Redis) -> None:
    rmid, _ = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    lease = f"{store.prefix}:leader"
    redis_client.set(lease, "me:2")
    with pytest.raises(Fenced):
        await store.record_machine(Q, rmid, 1, "m1", NOW, Fence(lease, "me:1", 1))


async def test_queues_with_claims_are_remembered_until_their_claims_are_gone(
    store: ClaimStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    enqueue(redis_client, f"{redis_prefix}-ns")
    [claim] = await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert await store.claim_queues() == {Q}
    await store.forget_queues([Q])  # it still has a claim: kept
    assert await store.claim_queues() == {Q}
    await store.give_back(Q, claim.redis_message_id, "test", UNFENCED)
    await store.forget_queues([Q])
    assert await store.claim_queues() == set()


async def test_every_script_changes_only_the_claim_of_its_own_launch(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    rmid, _ = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    await store.give_back(Q, rmid, "machine_gone", UNFENCED)
    [newer] = await store.claim(Q, "ci", 1, NOW + 1, UNFENCED)
    assert newer.launch == 2
    assert await store.give_back(Q, rmid, "late", UNFENCED, launch=1) == "gone"
    assert await store.dead_letter(Q, rmid, "late", UNFENCED, NOW, launch=1) == "gone"
    assert await store.requeue_or_dead_letter(Q, rmid, "late", 3, UNFENCED, NOW, launch=1) == (
        "gone")
    assert not await store.record_machine(Q, rmid, 1, "m-old", NOW + 2, UNFENCED)
    assert not await store.begin_create(Q, rmid, 1, NOW + 2, 30_000, UNFENCED)
    assert not await store.create_failed(Q, rmid, 1, NOW + 2, "late", UNFENCED)
    [still] = (await store.list_claims([Q]))[Q]
    assert still == newer
    assert await store.create_failed(Q, rmid, 2, NOW + 3, "capacity", UNFENCED)
    assert await store.begin_create(Q, rmid, 2, NOW + 4, 30_000, UNFENCED)
    assert await store.record_machine(Q, rmid, 2, "m2", NOW + 5, UNFENCED)
    assert await store.give_back(Q, rmid, "test", UNFENCED, launch=2) == "requeued"


async def test_a_refused_create_is_recorded_with_its_reason_until_the_next_attempt(
    store: ClaimStore, redis_client: redis.Redis
) -> None:
    rmid, _ = enqueue(redis_client, store.namespace)
    await store.claim(Q, "ci", 1, NOW, UNFENCED)
    assert await store.create_failed(Q, rmid, 1, NOW + 1, "guest not allowed", UNFENCED,
                                     refused=True)
    [claim] = (await store.list_claims([Q]))[Q]
    assert (claim.refused, claim.failed_at, claim.create_until) == (
        "guest not allowed", NOW + 1, None)
    assert await store.begin_create(Q, rmid, 1, NOW + 2, 30_000, UNFENCED)
    [claim] = (await store.list_claims([Q]))[Q]
    assert (claim.refused, claim.failed_at, claim.attempts) == (None, None, 2)
    assert await store.create_failed(Q, rmid, 1, NOW + 3, "capacity: full", UNFENCED)
    [claim] = (await store.list_claims([Q]))[Q]
    assert (claim.refused, claim.last_error) == (None, "capacity: full")


async def test_claims_and_their_bodies_are_read_in_one_atomic_step(
    store: ClaimStore, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner's ack drops the body and the claim together; were they read apart, a claim read
    before an ack whose body was read after it would come back without a body (and be
    dead-lettered as invalid, its machine, a warm slot perhaps, force-destroyed). They are read
    by one script, one Redis command: nothing can run between the two reads."""
    ns = store.namespace
    (done, _), (broken, _), (running, _) = (enqueue(redis_client, ns) for _ in range(3))
    await store.claim(Q, "ci", 3, NOW, UNFENCED)
    redis_client.hdel(f"{ns}:{Q}.msgs", broken)  # a claim whose body really is missing
    runner = RunnerClaim(redis_client, namespace=ns, prefix=store.prefix, queue=Q,
                         redis_message_id=done)
    assert runner.mark_running("m1", NOW + 1)
    await store.list_claims([Q], with_messages=True)  # the script is loaded now
    sent: list[tuple[object, ...]] = []
    execute = store._redis.execute_command

    async def counted(*args: object, **kwargs: object) -> object:
        sent.append(args)
        return await execute(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store._redis, "execute_command", counted)
    listed = (await store.list_claims([Q, "other"], with_messages=True))[Q]
    assert len(sent) == 1 and sent[0][0] == "EVALSHA"
    assert {c.redis_message_id: bool(c.message) for c in listed} == {
        done: True, broken: False, running: True}
    assert runner.finish("ack", NOW + 2, machine_id="m1")
    listed = (await store.list_claims([Q], with_messages=True))[Q]
    assert {c.redis_message_id: bool(c.message) for c in listed} == {broken: False, running: True}
