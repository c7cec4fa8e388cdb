"""Redelivery dedupe in the real Redis: one winner per delivery id, even when racing; a TTL of
days; keys under the given prefix; forget lets a redelivery through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from scaler.github.deliveries import DEFAULT_TTL_S, Deliveries, delivery_key

DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_delivery_is_new_once_then_seen(
    aclient: aioredis.Redis, redis_prefix: str
) -> None:
    deliveries = Deliveries(aclient, redis_prefix)
    assert await deliveries.seen(DELIVERY) is False
    assert await deliveries.seen(DELIVERY) is True
    assert await deliveries.seen("another-delivery") is False


async def test_concurrent_copies_have_exactly_one_winner(
    redis_url: str, redis_prefix: str
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(8)]  # as if 8 replicas
    try:
        answers = await asyncio.gather(
            *(Deliveries(c, redis_prefix).seen(DELIVERY) for c in clients for _ in range(5))
        )
    finally:
        for c in clients:
            await c.aclose()
    assert answers.count(False) == 1
    assert len(answers) == 40


async def test_the_key_is_under_the_prefix_with_a_ttl_of_days(
    aclient: aioredis.Redis, redis_client: redis.Redis, redis_prefix: str
) -> None:
    await Deliveries(aclient, redis_prefix, clock=lambda: 1_700_000_000.5).seen(DELIVERY)
    key = delivery_key(redis_prefix, DELIVERY)
    assert key == f"{redis_prefix}:github:delivery:{DELIVERY}"
    assert [k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}*")] == [key]
    assert redis_client.get(key) == b"1700000000500"
    assert DEFAULT_TTL_S - 5 <= redis_client.ttl(key) <= DEFAULT_TTL_S
    assert DEFAULT_TTL_S == 3 * 24 * 3600


async def test_prefixes_do_not_see_each_other(
    aclient: aioredis.Redis, redis_prefix: str
) -> None:
    assert await Deliveries(aclient, f"{redis_prefix}-a").seen(DELIVERY) is False
    assert await Deliveries(aclient, f"{redis_prefix}-b").seen(DELIVERY) is False


async def test_the_ttl_can_be_longer_for_enterprise_server(
    aclient: aioredis.Redis, redis_client: redis.Redis, redis_prefix: str
) -> None:
    seven_days = 7 * 24 * 3600
    assert await Deliveries(aclient, redis_prefix, ttl_s=seven_days).seen(DELIVERY) is False
    assert seven_days - 5 <= redis_client.ttl(delivery_key(redis_prefix, DELIVERY)) <= seven_days


async def test_forget_lets_a_redelivery_be_acted_on(
    aclient: aioredis.Redis, redis_prefix: str
) -> None:
    deliveries = Deliveries(aclient, redis_prefix)
    assert await deliveries.seen(DELIVERY) is False
    await deliveries.forget(DELIVERY)
    assert await deliveries.seen(DELIVERY) is False
    assert await deliveries.seen(DELIVERY) is True


async def test_bad_arguments_are_refused(aclient: aioredis.Redis, redis_prefix: str) -> None:
    with pytest.raises(ValueError):
        Deliveries(aclient, redis_prefix, ttl_s=0)
    with pytest.raises(ValueError):
        Deliveries(aclient, "")
    with pytest.raises(ValueError):
        await Deliveries(aclient, redis_prefix).seen("")
