"""The act step's handling of create outcomes Fly can answer but the local API does not produce
(refusals of a valid-looking request, org machine limits): httpx.MockTransport for Fly, real
Redis for the claims."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from scaler.fly.client import AsyncFlyClient
from scaler.fly.retry import RetryPolicy
from scaler.jobs.claims import ClaimStore, claims_key
from scaler.jobs.leader import UNFENCED
from scaler.loop.act import Executor
from scaler.loop.governor import MemoryGovernor
from scaler.loop.overlay import InFlight, Overlay
from scaler.policy.types import Launch, Plan
from scaler.telemetry.metrics import Metrics
from tests.scaler_harness import enqueue, make_settings, redis_client


def _fly(status: int, body: dict[str, Any]) -> AsyncFlyClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return AsyncFlyClient("t", transport=httpx.MockTransport(handler), base_url="http://fly",
                          governor=MemoryGovernor(), retry=RetryPolicy(max_attempts=1))


async def _launch(redis_url: str, prefix: str, fly: AsyncFlyClient,
                  pool: dict[str, Any] | None = None, **options: Any) -> Any:
    settings = make_settings(api_url="http://fly", token="t", redis_url=redis_url,
                             namespace=prefix, prefix=f"{prefix}fs", app="app", queue="q",
                             extra_pool=pool)
    enqueue(redis_url, prefix, f"{prefix}fs", "q", "record", "k", "v", **options)
    r = aioredis.Redis.from_url(redis_url)
    metrics = Metrics()
    executor = Executor(settings, fly, r, ClaimStore(r, prefix, f"{prefix}fs"), metrics, Overlay(),
                        InFlight())
    plan = Plan(actions=(Launch("jobs", "app", "q", 1),))
    await executor.execute(plan, UNFENCED, time.monotonic() + 10)
    await executor.drain(wait_s=10)
    await r.aclose()
    return metrics


@pytest.mark.parametrize(("status", "body"), [
    (400, {"error": "image not found"}),
    (422, {"error": "To create more than 1 machine per app please add a payment method"}),
])
async def test_a_refused_pool_template_keeps_the_claim(
    redis_url: str, redis_prefix: str, status: int, body: dict[str, Any]
) -> None:
    metrics = await _launch(redis_url, redis_prefix, _fly(status, body))
    r = redis_client(redis_url)
    assert r.hlen(claims_key(f"{redis_prefix}fs", "q")) == 1  # relaunched later, not lost
    assert r.zcard(f"{redis_prefix}:q.XQ") == 0
    result = "refused" if status == 400 else "capacity"
    assert metrics.registry.get_sample_value(
        "fly_scaler_launches_total", {"pool": "jobs", "result": result}) == 1.0


async def test_a_refused_machine_of_the_jobs_own_size_is_recorded_not_dead_lettered(
    redis_url: str, redis_prefix: str
) -> None:
    # The act step records what Fly said; dead-lettering is the planner's decision, next tick.
    fly = _fly(422, {"error": "performance machines are not enabled for this organization"})
    await _launch(redis_url, redis_prefix, fly, fly_machine={"size": "performance-2x"})
    r = redis_client(redis_url)
    [record] = r.hvals(claims_key(f"{redis_prefix}fs", "q"))
    assert "performance machines are not enabled" in json.loads(record)["refused"]
    assert r.zcard(f"{redis_prefix}:q.XQ") == 0


async def test_a_job_that_only_picks_a_region_keeps_the_pools_size(
    redis_url: str, redis_prefix: str
) -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        return httpx.Response(200, json={"id": "m1", "name": body["name"], "state": "created",
                                         "config": body["config"]})

    fly = AsyncFlyClient("t", transport=httpx.MockTransport(handler), base_url="http://fly",
                         governor=MemoryGovernor(), retry=RetryPolicy(max_attempts=1))
    await _launch(redis_url, redis_prefix, fly, {"size": "performance-1x"},
                  fly_machine={"region": "ams"})
    [body] = sent
    assert body["region"] == "ams"
    assert body["config"]["guest"] == {"cpu_kind": "performance", "cpus": 1, "memory_mb": 2048}
