"""The embedded promoter against real Redis, with no worker and no actors module."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from scaler.jobs.promoter import Promoter

Q = "jobs"


@pytest.fixture
def ns(redis_prefix: str) -> str:
    return f"{redis_prefix}-ns"


@pytest.fixture
def producer(redis_url: str, ns: str) -> Iterator[RedisBroker]:
    b = RedisBroker(url=redis_url, namespace=ns)  # type: ignore[no-untyped-call]
    yield b
    b.client.close()


@pytest.fixture
def promoter(redis_url: str, ns: str, redis_prefix: str) -> Iterator[Promoter]:
    p = Promoter(redis_url, ns, [Q], maintenance_interval_s=30, prefix=redis_prefix, poll_ms=100)
    yield p
    p.stop()


def test_delayed_message_becomes_ready_with_no_worker(
    producer: RedisBroker, promoter: Promoter, redis_client: redis.Redis, ns: str
) -> None:
    sent = producer.enqueue(dramatiq.Message(Q, "unknown_actor", (1,), {}, {}), delay=100)
    assert redis_client.llen(f"{ns}:{Q}") == 0
    promoter.start()
    popped = redis_client.blpop([f"{ns}:{Q}"], timeout=20)
    assert popped is not None
    body = json.loads(redis_client.hget(f"{ns}:{Q}.msgs", popped[1]) or b"{}")
    assert body["message_id"] == sent.message_id
    assert body["queue_name"] == Q
    assert "eta" not in body["options"]
    assert body["options"]["enqueued_at"] > 0
    assert redis_client.zcard(f"{ns}:{Q}.XQ") == 0


def test_eta_less_delayed_message_is_promoted_not_dead_lettered(
    promoter: Promoter, redis_client: redis.Redis, ns: str
) -> None:
    rmid = str(uuid.uuid4())
    message: dramatiq.Message[None] = dramatiq.Message(
        f"{Q}.DQ", "unknown_actor", (), {}, {"redis_message_id": rmid}
    )
    message.options["eta"] = None
    redis_client.hset(f"{ns}:{Q}.DQ.msgs", rmid, message.encode())
    redis_client.rpush(f"{ns}:{Q}.DQ", rmid)
    promoter.start()
    popped = redis_client.blpop([f"{ns}:{Q}"], timeout=20)
    assert popped is not None
    promoter.stop()  # joins the consumer, so the promotion's ack on q.DQ has happened
    assert redis_client.zcard(f"{ns}:{Q}.XQ") == 0
    assert redis_client.hlen(f"{ns}:{Q}.DQ.msgs") == 0


def test_forced_maintenance_requeues_a_dead_workers_messages(
    promoter: Promoter, redis_client: redis.Redis, ns: str
) -> None:
    dead = f"dead-{uuid.uuid4()}"
    rmid = str(uuid.uuid4())
    redis_client.hset(f"{ns}:{Q}.msgs", rmid, dramatiq.Message(Q, "a", (), {}, {}).encode())
    redis_client.sadd(f"{ns}:__acks__.{dead}.{Q}", rmid)
    redis_client.zadd(f"{ns}:__heartbeats__", {dead: 1})  # silent since 1970
    promoter.start()
    assert promoter.maintained.wait(20)
    assert redis_client.lrange(f"{ns}:{Q}", 0, -1) == [rmid.encode()]
    assert not redis_client.exists(f"{ns}:__acks__.{dead}.{Q}")


def test_ready_work_is_never_taken(
    producer: RedisBroker, promoter: Promoter, redis_client: redis.Redis, ns: str
) -> None:
    sent = producer.enqueue(dramatiq.Message(Q, "a", (), {}, {}))
    promoter.start()
    assert promoter.maintained.wait(20)
    promoter.stop()
    assert redis_client.lrange(f"{ns}:{Q}", 0, -1) == [sent.options["redis_message_id"].encode()]


def test_stop_returns_held_messages_and_leaves_no_thread(
    producer: RedisBroker, redis_url: str, ns: str, redis_client: redis.Redis, redis_prefix: str
) -> None:
    before = set(threading.enumerate())
    p = Promoter(redis_url, ns, [Q, "other"], prefix=redis_prefix, poll_ms=100)
    producer.enqueue(dramatiq.Message(Q, "a", (), {}, {}), delay=3_600_000)
    p.start()
    assert p.maintained.wait(20)
    p.stop()
    assert set(threading.enumerate()) - before == set()
    assert (
        redis_client.llen(f"{ns}:{Q}.DQ")
        + redis_client.scard(f"{ns}:__acks__.{p.broker.broker_id}.{Q}.DQ")
        == 1
    )
    assert redis_client.hlen(f"{ns}:{Q}.DQ.msgs") == 1
    assert redis_client.llen(f"{ns}:{Q}") == 0


def test_bad_interval_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="maintenance_interval_s"):
        Promoter(redis_url, "ns", [Q], maintenance_interval_s=0)
