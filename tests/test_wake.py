"""Wake-ups from real Redis pub/sub: keyspace notifications, the publish channel, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import dramatiq
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker

from scaler.loop.wake import Waker, ensure_keyspace_notifications
from workers.enqueue import ScalerMiddleware


@pytest.fixture
async def aredis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, client_name=f"{redis_prefix}-waker")
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def watching(waker: Waker) -> AsyncIterator[Callable[[str], asyncio.Event]]:
    """Consume the waker in a task; ``arrived(q)`` is an Event set when ``q`` is yielded."""
    events: dict[str, asyncio.Event] = {}

    def arrived(q: str) -> asyncio.Event:
        return events.setdefault(q, asyncio.Event())

    async def consume() -> None:
        async for q in waker:
            arrived(q).set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(waker.ready.wait(), 10)
        yield arrived
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_enqueue_through_dramatiq_wakes_via_keyspace_events(
    aredis: aioredis.Redis, broker: RedisBroker, ns: str, redis_prefix: str
) -> None:
    waker = Waker(aredis, ns, redis_prefix, ["jobs", "other"])
    async with watching(waker) as arrived:
        assert waker.notifications is True
        broker.enqueue(dramatiq.Message("jobs", "work", (), {}, {}))  # no middleware: no publish
        await asyncio.wait_for(arrived("jobs").wait(), 10)
        assert not arrived("other").is_set()


async def test_publish_path_works_with_notifications_off(
    aredis: aioredis.Redis, redis_url: str, ns: str, redis_prefix: str
) -> None:
    producer = RedisBroker(url=redis_url, namespace=ns)  # type: ignore[no-untyped-call]
    producer.add_middleware(ScalerMiddleware(prefix=redis_prefix))
    waker = Waker(aredis, ns, redis_prefix, ["jobs"], use_notifications=False)
    try:
        async with watching(waker) as arrived:
            assert waker.notifications is None
            producer.enqueue(dramatiq.Message("jobs", "work", (), {}, {}))
            await asyncio.wait_for(arrived("jobs").wait(), 10)
    finally:
        producer.client.close()


async def test_refused_config_set_means_unavailable(
    aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*args: object, **kwargs: object) -> None:
        raise redis.ResponseError("unknown command 'CONFIG', with args beginning with: 'SET'")

    async def off(*args: object, **kwargs: object) -> dict[str, str]:
        return {"notify-keyspace-events": ""}

    # a managed Redis that forbids CONFIG SET cannot be produced locally
    monkeypatch.setattr(aredis, "config_set", refuse)
    monkeypatch.setattr(aredis, "config_get", off)
    assert await ensure_keyspace_notifications(aredis) is False


async def test_reconnect_wakes_every_queue(
    aredis: aioredis.Redis, redis_client: redis.Redis, ns: str, redis_prefix: str
) -> None:
    waker = Waker(aredis, ns, redis_prefix, ["a", "b"], use_notifications=False)
    async with watching(waker) as arrived:
        ours = [
            c["id"]
            for c in redis_client.client_list(_type="pubsub")
            if c.get("name") == f"{redis_prefix}-waker"
        ]
        assert ours
        waker.ready.clear()
        for client_id in ours:
            redis_client.client_kill_filter(_id=client_id)
        await asyncio.wait_for(arrived("a").wait(), 10)
        await asyncio.wait_for(arrived("b").wait(), 10)
        assert waker.reconnects == 1


async def test_unwatched_and_foreign_events_are_ignored(
    aredis: aioredis.Redis, ns: str, redis_prefix: str
) -> None:
    waker = Waker(aredis, ns, redis_prefix, ["jobs", "marker"])
    async with watching(waker) as arrived:
        assert waker.notifications is True
        await aredis.publish(f"{redis_prefix}:wake", "not-watched")
        await aredis.rpush(f"{ns}:jobs.DQ", "x")  # a delayed enqueue: nothing became ready
        # events arrive in order: once "marker" is yielded, the two above were seen and dropped
        await aredis.rpush(f"{ns}:marker", "x")
        await asyncio.wait_for(arrived("marker").wait(), 10)
        assert not arrived("jobs").is_set()
        await aredis.publish(f"{redis_prefix}:wake", "jobs")
        await asyncio.wait_for(arrived("jobs").wait(), 10)
        assert not arrived("not-watched").is_set()
