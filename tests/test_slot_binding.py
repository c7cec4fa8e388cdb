"""Warm slot bindings against a real Redis: a claim bound to a slot, fenced, never two live
bindings on one slot, freed when the claim ends, found by the runner by machine id."""

from __future__ import annotations

import json

import pytest
import redis
import redis.asyncio

from scaler.jobs.claims import ClaimStore, RunnerClaim, claims_key
from scaler.jobs.keys import finished_machines_key, orphans_key
from scaler.jobs.leader import UNFENCED, Fence, Fenced
from scaler.jobs.slots import SlotStore, read_binding, slots_key
from tests.test_claims import NOW, Q, enqueue


@pytest.fixture
def slots(aredis: redis.asyncio.Redis, redis_prefix: str) -> SlotStore:
    return SlotStore(aredis, prefix=redis_prefix)


async def _claim_one(store: ClaimStore, client: redis.Redis) -> str:
    rmid, _ = enqueue(client, store.namespace)
    (c,) = await store.claim(Q, "ci", 1, NOW, UNFENCED, app="jobs-app")
    assert c.redis_message_id == rmid
    return rmid


async def test_bind_records_job_launch_and_machine(
    store: ClaimStore, slots: SlotStore, redis_client: redis.Redis
) -> None:
    rmid = await _claim_one(store, redis_client)
    redis_client.hset(finished_machines_key(store.prefix), "slot1", NOW)  # its last job's mark
    redis_client.hset(orphans_key(store.prefix), "slot1", 1.0)  # watched while it had no job
    assert await slots.bind("ci", Q, rmid, 1, "slot1", NOW + 5, UNFENCED) == "bound"
    claim = json.loads(redis_client.hget(claims_key(store.prefix, Q), rmid) or b"{}")
    assert claim["machine_id"] == "slot1"
    assert claim["updated_at"] == NOW + 5
    assert "create_until" not in claim  # no create is pending: the slot is its machine
    binding = read_binding(redis_client, store.prefix, "slot1")
    assert binding is not None
    assert (binding.queue, binding.job, binding.launch, binding.jobs, binding.pool) == (
        Q, rmid, 1, 1, "ci")
    assert redis_client.hget(finished_machines_key(store.prefix), "slot1") is None
    assert redis_client.hget(orphans_key(store.prefix), "slot1") is None
    # binding it again is idempotent; the runner of that machine (only) may take the claim
    assert await slots.bind("ci", Q, rmid, 1, "slot1", NOW + 6, UNFENCED) == "bound"
    runner = RunnerClaim(redis_client, namespace=store.namespace, prefix=store.prefix, queue=Q,
                         redis_message_id=rmid, launch=1)
    assert not runner.mark_running("other-machine", NOW + 7)
    assert runner.mark_running("slot1", NOW + 7)


async def test_a_slot_runs_one_job_at_a_time(
    store: ClaimStore, slots: SlotStore, redis_client: redis.Redis
) -> None:
    first = await _claim_one(store, redis_client)
    second = await _claim_one(store, redis_client)
    assert await slots.bind("ci", Q, first, 1, "slot1", NOW, UNFENCED) == "bound"
    assert await slots.bind("ci", Q, second, 1, "slot1", NOW, UNFENCED) == "busy"
    claim = json.loads(redis_client.hget(claims_key(store.prefix, Q), second) or b"{}")
    assert "machine_id" not in claim  # the refused binding changed nothing
    # and a job runs on one machine: a claim bound to one slot is not bound to another
    assert await slots.bind("ci", Q, first, 1, "slot2", NOW, UNFENCED) == "elsewhere"
    assert read_binding(redis_client, store.prefix, "slot2") is None


async def test_the_slot_is_free_once_the_job_ends(
    store: ClaimStore, slots: SlotStore, redis_client: redis.Redis
) -> None:
    first = await _claim_one(store, redis_client)
    second = await _claim_one(store, redis_client)
    assert await slots.bind("ci", Q, first, 1, "slot1", NOW, UNFENCED) == "bound"
    runner = RunnerClaim(redis_client, namespace=store.namespace, prefix=store.prefix, queue=Q,
                         redis_message_id=first, launch=1)
    assert runner.mark_running("slot1", NOW + 1)
    assert runner.finish("ack", NOW + 2, machine_id="slot1")
    assert await slots.bind("ci", Q, second, 1, "slot1", NOW + 3, UNFENCED) == "bound"
    binding = read_binding(redis_client, store.prefix, "slot1")
    assert binding is not None and (binding.job, binding.jobs) == (second, 2)
    assert (await slots.bindings())["slot1"].jobs == 2


async def test_the_slot_is_free_once_a_dead_job_is_settled(
    store: ClaimStore, slots: SlotStore, redis_client: redis.Redis
) -> None:
    first = await _claim_one(store, redis_client)
    assert await slots.bind("ci", Q, first, 1, "slot1", NOW, UNFENCED) == "bound"
    assert await store.requeue_or_dead_letter(Q, first, "slot_stopped", 3, UNFENCED, NOW) == (
        "requeued")
    # the requeued job is claimed again (launch 2) and may go to the same slot
    (again,) = await store.claim(Q, "ci", 1, NOW + 1, UNFENCED)
    assert (again.redis_message_id, again.launch) == (first, 2)
    assert await slots.bind("ci", Q, first, 2, "slot1", NOW + 2, UNFENCED) == "bound"
    # the runner of the dead launch can no longer take it
    old = RunnerClaim(redis_client, namespace=store.namespace, prefix=store.prefix, queue=Q,
                      redis_message_id=first, launch=1)
    assert not old.mark_running("slot1", NOW + 3)


async def test_bind_of_a_gone_claim_and_fencing(
    store: ClaimStore, slots: SlotStore, redis_client: redis.Redis
) -> None:
    assert await slots.bind("ci", Q, "no-such-job", 1, "slot1", NOW, UNFENCED) == "gone"
    rmid = await _claim_one(store, redis_client)
    assert await slots.bind("ci", Q, rmid, 2, "slot1", NOW, UNFENCED) == "gone"  # other launch
    lease = f"{store.prefix}:leader"
    redis_client.set(lease, "me:2")
    with pytest.raises(Fenced):
        await slots.bind("ci", Q, rmid, 1, "slot1", NOW, Fence(lease, "me:1", 1))
    assert read_binding(redis_client, store.prefix, "slot1") is None
    assert await slots.bind("ci", Q, rmid, 1, "slot1", NOW, Fence(lease, "me:2", 2)) == "bound"
    await slots.forget("slot1")
    assert redis_client.hlen(slots_key(store.prefix)) == 0
