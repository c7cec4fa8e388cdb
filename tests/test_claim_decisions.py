"""What becomes of a claim is the planner's decision, made on what the observation carries: a
create Fly refused, options no machine can have (whichever pool holds the claim) and a machine that
exists already under the claim's name all reach the next plan through the claim, and the act step
only carries the plan out. Real Redis, the local Machines API over HTTP (its faults play Fly's
refusals)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.jobs.claims import ClaimStore, claims_key, dead_reasons_key
from scaler.jobs.leader import UNFENCED
from scaler.local.server import LocalAPIServer
from scaler.loop.claimview import check_options, claim_view
from scaler.loop.governor import MemoryGovernor
from scaler.loop.machines import per_job_request
from scaler.loop.reconciler import Reconciler
from scaler.policy import DeadLetter, Launch, Plan, Relaunch
from scaler.telemetry.metrics import Metrics
from tests.scaler_harness import create_app, enqueue, fly_client, machines, make_settings

REFUSE_CREATES = {"Machines_create": {"error_rate": 1.0, "error_status": 422}}


@dataclass
class World:
    """One per-job pool ``jobs`` on a fresh app of a local API, its Redis keys, and a reconciler
    that is the leader."""

    api: httpx.Client
    app: str
    queue: str
    settings: Settings
    redis: redis.Redis
    rec: Reconciler

    @property
    def prefix(self) -> str:
        return self.settings.redis.prefix

    def enqueue(self, **options: Any) -> str:
        """Enqueue one job; its redis_message_id."""
        s = self.settings.redis
        enqueue(s.url.get_secret_value(), s.namespace, s.prefix, self.queue, "record", "k", "v",
                **options)
        (rmid,) = self.redis.lrange(f"{s.namespace}:{self.queue}", -1, -1)
        return str(rmid)

    def claims(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(claims_key(self.prefix, self.queue))
        return {str(k): json.loads(v) for k, v in raw.items()}

    def dead(self) -> dict[str, str]:
        """Dead-lettered job -> the reason the scaler recorded."""
        raw = self.redis.hgetall(dead_reasons_key(self.prefix, self.queue))
        return {str(k): json.loads(v)["reason"] for k, v in raw.items()}

    async def tick(self) -> Plan:
        """One tick, waiting for the creates it sent; its plan."""
        result = await self.rec.tick()
        await self.rec.executor.drain(wait_s=10)
        return result.plan


@pytest.fixture
async def world(
    request: pytest.FixtureRequest, local_api_factory: Callable[..., LocalAPIServer],
    redis_url: str, redis_prefix: str,
) -> AsyncIterator[World]:
    faults = getattr(request, "param", None)
    server = local_api_factory(faults=faults) if faults else local_api_factory()
    api = fly_client(server.url, server.token)
    app, queue = create_app(api), f"q{uuid.uuid4().hex[:8]}"
    settings = make_settings(api_url=server.url, token=server.token, redis_url=redis_url,
                             namespace=redis_prefix, prefix=f"{redis_prefix}fs", app=app,
                             queue=queue)
    fly = AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url)
    r = aioredis.Redis.from_url(redis_url)
    rec = Reconciler(settings, fly, r, MemoryGovernor(), Metrics(), list_interval=0.0)
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    yield World(api, app, queue, settings, sync, rec)
    await rec.executor.drain(wait_s=10)
    await fly.aclose()
    await r.aclose()
    sync.close()


def _dead_letter_decisions(plan: Plan) -> list[tuple[str | None, str]]:
    return [(d.pool, d.reason) for d in plan.decisions
            if d.kind == "dead_letter" and d.outcome == "acted"]


@pytest.mark.parametrize("world", [REFUSE_CREATES], indirect=True)
async def test_a_create_fly_refuses_for_the_jobs_own_size_is_dead_lettered_by_the_plan(
    world: World,
) -> None:
    job = world.enqueue(fly_machine={"cpus": 2, "memory_mb": 1024})
    first = await world.tick()
    assert [a.queue for a in first.of_type(Launch)] == [world.queue]
    # The act step recorded Fly's answer in the claim and decided nothing.
    assert "injected fault" in world.claims()[job]["refused"]
    assert world.dead() == {}
    second = await world.tick()
    (action,) = second.of_type(DeadLetter)
    assert action.cause == "fly_refused" and action.claim.job == job
    assert action.reason.startswith("Fly refused this job's machine: ")
    assert _dead_letter_decisions(second) == [("jobs", action.reason)]
    assert world.dead() == {job: action.reason}
    assert world.claims() == {}
    assert machines(world.api, world.app, include_deleted=True) == []


@pytest.mark.parametrize("world", [REFUSE_CREATES], indirect=True)
async def test_a_refused_pool_template_keeps_the_job_and_backs_off(world: World) -> None:
    job = world.enqueue()
    await world.tick()
    assert "injected fault" in world.claims()[job]["refused"]
    second = await world.tick()
    assert second.of_type(DeadLetter) == () and second.of_type(Relaunch) == ()
    assert ("wait", "backoff") in [(d.kind, d.reason) for d in second.not_taken()]
    assert list(world.claims()) == [job] and world.dead() == {}


async def test_an_adopted_claim_whose_options_no_machine_can_have_is_dead_lettered(
    world: World,
) -> None:
    # Claimed by a pool since renamed: the pool serving its queue now adopts it, and its options
    # are checked all the same (they were skipped for a pool the config no longer names).
    job = world.enqueue(fly_machine={"cpus": 3})
    store = ClaimStore(world.rec.redis, world.settings.redis.namespace, world.prefix)
    (claim,) = await store.claim(world.queue, "old-name", 1, int(time.time() * 1000), UNFENCED,
                                 app=world.app)
    assert claim.pool == "old-name"
    plan = await world.tick()
    (action,) = plan.of_type(DeadLetter)
    assert (action.pool, action.claim.job, action.cause) == ("jobs", job, "invalid_options")
    assert "fly_machine.cpus" in action.reason
    assert _dead_letter_decisions(plan) == [("jobs", action.reason)]
    assert world.dead() == {job: action.reason}


async def test_a_new_claim_with_invalid_options_gets_no_create_and_the_plan_dead_letters_it(
    world: World,
) -> None:
    job = world.enqueue(fly_machine={"cpus": 1, "memory_mb": 100})
    first = await world.tick()
    assert first.of_type(Launch) and list(world.claims()) == [job]
    assert machines(world.api, world.app, include_deleted=True) == []  # no create was sent
    assert world.dead() == {}
    second = await world.tick()
    (action,) = second.of_type(DeadLetter)
    assert "fly_machine.memory_mb" in action.reason
    assert world.dead() == {job: action.reason}


async def test_a_relaunch_finds_the_machine_an_earlier_create_made_under_its_name(
    world: World,
) -> None:
    job = world.enqueue()
    store = ClaimStore(world.rec.redis, world.settings.redis.namespace, world.prefix)
    (claim,) = await store.claim(world.queue, "jobs", 1, int(time.time() * 1000) - 120_000,
                                 UNFENCED, app=world.app, create_window_ms=1000)
    # The create of a leader that died landed, but no claim says so (and no listing yet).
    pool = world.settings.pools[0]
    view = claim_view(claim, check_options(claim))
    request = per_job_request(pool, world.settings, view)
    made = world.api.post(f"/v1/apps/{world.app}/machines", json=request.to_wire())
    assert made.status_code == 200, made.text
    plan = Plan(actions=(Relaunch("jobs", world.app, view),))
    report = await world.rec.executor.execute(plan, UNFENCED, time.monotonic() + 10)
    await world.rec.executor.drain(wait_s=10)
    assert report.errors == []
    assert world.claims()[job]["machine_id"] == made.json()["id"]
    assert len(machines(world.api, world.app, include_deleted=True)) == 1
