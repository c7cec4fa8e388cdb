"""Queue statistics from real dramatiq writes, in one Redis round trip."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker

from scaler.jobs.claims import ClaimStore
from scaler.jobs.leader import UNFENCED
from scaler.jobs.queues import RoundTrips, read_queue_stats


@pytest.fixture
def broker(redis_url: str, redis_prefix: str) -> Iterator[RedisBroker]:
    b = RedisBroker(url=redis_url, namespace=f"{redis_prefix}-ns")  # type: ignore[no-untyped-call]
    yield b
    b.client.close()


async def test_counts_follow_dramatiq_layout(
    broker: RedisBroker, aredis: aioredis.Redis, redis_prefix: str
) -> None:
    ns = broker.namespace
    for i in range(3):
        broker.enqueue(dramatiq.Message("jobs", "work", (i,), {}, {}))
    broker.enqueue(dramatiq.Message("jobs", "work", (9,), {}, {}), delay=60_000)
    first = broker.enqueue(dramatiq.Message("jobs", "work", (), {}, {"enqueued_at": 1_000}))
    fetched = broker.do_fetch("jobs", 1)  # a worker holds the oldest one
    assert len(fetched) == 1
    broker.do_nack("jobs", dramatiq.Message.decode(fetched[0]).options["redis_message_id"])
    fetched = broker.do_fetch("jobs", 1)
    store = ClaimStore(aredis, namespace=ns, prefix=redis_prefix)
    await store.claim("jobs", "ci", 1, 0, UNFENCED)

    # the head is now the message stamped with enqueued_at=1000
    assert await aredis.lindex(f"{ns}:jobs", 0) == first.options["redis_message_id"].encode()
    stats = await read_queue_stats(aredis, ns, redis_prefix, ["jobs", "empty"], 3_500)

    s = stats["jobs"]
    assert (s.ready, s.delayed, s.dead, s.claimed, s.in_flight) == (1, 1, 1, 1, 2)
    assert s.oldest_ready_age_s == pytest.approx(2.5)
    e = stats["empty"]
    assert (e.ready, e.delayed, e.dead, e.claimed, e.in_flight) == (0, 0, 0, 0, 0)
    assert e.oldest_ready_age_s is None


async def test_age_falls_back_to_message_timestamp(
    broker: RedisBroker, aredis: aioredis.Redis
) -> None:
    sent = broker.enqueue(dramatiq.Message("jobs", "work", (), {}, {}))
    now = sent.message_timestamp + 4_000
    stats = await read_queue_stats(aredis, broker.namespace, "p", ["jobs"], now)
    assert stats["jobs"].oldest_ready_age_s == 4.0


async def test_one_round_trip_for_a_hundred_queues(
    broker: RedisBroker, aredis: aioredis.Redis, redis_prefix: str
) -> None:
    queues = [f"q{i}" for i in range(100)]
    for q in queues[::10]:
        broker.enqueue(dramatiq.Message(q, "work", (), {}, {}))
    warm = RoundTrips()
    await read_queue_stats(aredis, broker.namespace, redis_prefix, queues, 0, counter=warm)
    assert warm.count in (1, 3)  # on a fresh Redis: pipeline, NOSCRIPT -> load, pipeline again
    counter = RoundTrips()
    stats = await read_queue_stats(
        aredis, broker.namespace, redis_prefix, queues, 0, counter=counter
    )
    assert counter.count == 1
    assert sum(s.ready for s in stats.values()) == 10


async def test_redis_errors_propagate(broker: RedisBroker, aredis: aioredis.Redis) -> None:
    await aredis.set(f"{broker.namespace}:jobs", "not a list")
    with pytest.raises(redis.ResponseError):
        await read_queue_stats(aredis, broker.namespace, "p", ["jobs"], 0)


async def test_a_head_that_is_not_json_has_no_age_but_is_counted(
    broker: RedisBroker, aredis: aioredis.Redis
) -> None:
    ns = broker.namespace
    await aredis.rpush(f"{ns}:jobs", "m1")
    await aredis.hset(f"{ns}:jobs.msgs", "m1", "not json")
    broker.enqueue(dramatiq.Message("other", "work", (), {}, {"enqueued_at": 1_000.7}))
    stats = await read_queue_stats(aredis, ns, "p", ["jobs", "other"], 2_000)
    assert (stats["jobs"].ready, stats["jobs"].in_flight) == (1, 0)
    assert stats["jobs"].oldest_ready_age_s is None
    assert stats["other"].oldest_ready_age_s == pytest.approx(1.0, abs=0.01)
