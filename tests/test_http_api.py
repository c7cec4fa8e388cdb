"""The scaler's HTTP port against real Redis: health, metrics, auth, validation, limits, the
enqueue write (read back by dramatiq itself) and the message state lookup through every state."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dramatiq
import httpx
import pytest
import redis
import redis.asyncio as aioredis
import structlog
import uvicorn
from dramatiq.brokers.redis import RedisBroker
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from scaler.http.app import QueueInfo, create_http_app, openapi_document
from scaler.jobs.claims import ClaimStore, RunnerClaim
from scaler.jobs.keys import message_record_key as record_key
from scaler.jobs.leader import UNFENCED
from scaler.local.testing import free_port
from scaler.secret import Secret
from scaler.telemetry.metrics import Metrics
from workers.enqueue import ScalerMiddleware
from workers.http_client import EnqueueClient, EnqueueError

TOKEN = "tok-alpha-7f3c9e"
OTHER_TOKEN = "tok-beta-1d2e3f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUEUES = {"jobs": QueueInfo(frozenset({"work", "resize"})), "other": QueueInfo(frozenset({"x"}))}


class Ready:
    """A readiness answer the test can change."""

    def __init__(self) -> None:
        self.value: tuple[bool, str] = (True, "config loaded; redis ok")

    def __call__(self) -> tuple[bool, str]:
        return self.value


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def ready() -> Ready:
    return Ready()


@pytest.fixture
async def api(
    aredis: aioredis.Redis, redis_prefix: str, metrics: Metrics, ready: Ready
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_http_app(
        metrics=metrics, redis=aredis, namespace=redis_prefix, prefix=redis_prefix,
        queues=QUEUES, tokens=[Secret(TOKEN), Secret(OTHER_TOKEN)], ready=ready,
        max_body_bytes=4096,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://scaler"
    ) as client:
        yield client


@pytest.fixture
def broker(redis_client: redis.Redis, redis_prefix: str) -> Iterator[RedisBroker]:
    """A real dramatiq RedisBroker on the test namespace (its keys live under the prefix)."""
    b = RedisBroker(client=redis_client, namespace=redis_prefix)  # type: ignore[no-untyped-call]
    b.declare_queue("jobs")
    yield b
    b.close()


def _keys(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{prefix}*")}


def _rejected(metrics: Metrics, code: int) -> float:
    value = metrics.registry.get_sample_value("fly_scaler_http_rejected_total", {"code": str(code)})
    return value or 0.0


async def _enqueue(api: httpx.AsyncClient, body: dict[str, Any], queue: str = "jobs",
                   headers: dict[str, str] | None = None) -> httpx.Response:
    return await api.post(f"/v1/queues/{queue}/messages", json=body,
                          headers=AUTH if headers is None else headers)


# -- health, readiness, metrics, document ------------------------------------------------------

async def test_healthz_and_readyz_follow_the_ready_callback(
    api: httpx.AsyncClient, ready: Ready
) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    r = await api.get("/readyz")
    assert r.status_code == 200 and r.json()["reason"] == "config loaded; redis ok"
    ready.value = (False, "redis unreachable")
    r = await api.get("/readyz")
    assert r.status_code == 503 and r.json() == {"status": "not ready",
                                                 "reason": "redis unreachable"}


async def test_readyz_does_not_leak_the_text_of_a_failing_check(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("redis://:hunter2@db:6379 refused")

    app = create_http_app(metrics=Metrics(), redis=aredis, namespace=redis_prefix,
                          prefix=redis_prefix, queues={}, tokens=[], ready=broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://s") as client:
        r = await client.get("/readyz")
    assert r.status_code == 503 and "RuntimeError" in r.text and "hunter2" not in r.text


async def test_metrics_count_accepted_and_rejected(api: httpx.AsyncClient) -> None:
    assert (await _enqueue(api, {"actor": "work"})).status_code == 202
    assert (await _enqueue(api, {"actor": "work"}, headers={})).status_code == 401
    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'fly_scaler_http_enqueued_total{queue="jobs"} 1.0' in r.text
    assert 'fly_scaler_http_rejected_total{code="401"} 1.0' in r.text


async def test_openapi_document_is_served_and_names_every_route(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/v1/openapi.json")).json()
    assert doc == openapi_document()
    assert set(doc["paths"]) == {"/metrics", "/healthz", "/readyz", "/v1/openapi.json",
                                 "/v1/queues/{queue}/messages", "/v1/messages/{message_id}"}


# -- auth ------------------------------------------------------------------------------------

async def test_auth_missing_malformed_wrong_and_right(
    api: httpx.AsyncClient, metrics: Metrics, redis_client: redis.Redis, redis_prefix: str
) -> None:
    body = {"actor": "work"}
    r = await _enqueue(api, body, headers={})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert (await _enqueue(api, body, headers={"Authorization": f"Basic {TOKEN}"})).status_code \
        == 401
    assert (await _enqueue(api, body, headers={"Authorization": "Bearer "})).status_code == 401
    r = await _enqueue(api, body, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert _keys(redis_client, redis_prefix) == set()  # nothing refused was written
    assert (await api.get(f"/v1/messages/{uuid.uuid4()}", headers={})).status_code == 401
    assert _rejected(metrics, 401) == 4 and _rejected(metrics, 403) == 1
    for token in (TOKEN, OTHER_TOKEN):
        r = await _enqueue(api, body, headers={"Authorization": f"bearer {token}"})
        assert r.status_code == 202


async def test_no_configured_tokens_refuses_everyone(
    aredis: aioredis.Redis, redis_prefix: str
) -> None:
    app = create_http_app(metrics=Metrics(), redis=aredis, namespace=redis_prefix,
                          prefix=redis_prefix, queues=QUEUES, tokens=[Secret("")],
                          ready=Ready())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://s") as client:
        r = await client.post("/v1/queues/jobs/messages", json={"actor": "work"},
                              headers={"Authorization": "Bearer  "})
        assert r.status_code == 401
        r = await client.post("/v1/queues/jobs/messages", json={"actor": "work"},
                              headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403


async def test_tokens_never_reach_responses_or_logs(api: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        responses = [
            await _enqueue(api, {"actor": "work"}),
            await _enqueue(api, {"actor": "work"}, headers={"Authorization": f"Bearer {TOKEN}z"}),
            await _enqueue(api, {"actor": "nope"}),
        ]
    for r in responses:
        assert TOKEN not in r.text and OTHER_TOKEN not in r.text
    assert logs and TOKEN not in repr(logs)


# -- validation and limits ------------------------------------------------------------------------

async def test_validation_lists_every_field_with_a_fix(
    api: httpx.AsyncClient, redis_client: redis.Redis, redis_prefix: str
) -> None:
    r = await _enqueue(api, {
        "actor": 3, "args": {"a": 1}, "kwargs": [1], "kwarg": {}, "message_id": "not-a-uuid",
        "options": {"delay_ms": -1, "max_retries": True, "time_limit_ms": 0, "prio": 1,
                    "machine": {"cpus": 3, "memory_mb": 256}},
    })
    assert r.status_code == 422
    errors = {e["field"]: e for e in r.json()["errors"]}
    assert set(errors) == {"actor", "args", "kwargs", "kwarg", "message_id", "options.delay_ms",
                           "options.max_retries", "options.time_limit_ms", "options.prio",
                           "options.machine.cpus"}
    assert "did you mean 'kwargs'" in errors["kwarg"]["fix"]
    assert all(e["message"] and e["fix"] for e in errors.values())
    assert _keys(redis_client, redis_prefix) == set()


async def test_machine_options_use_the_producers_validation(api: httpx.AsyncClient) -> None:
    r = await _enqueue(api, {"actor": "work", "options": {"machine": {"region": "Chicago"}}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "options.machine.region"
    r = await _enqueue(api, {"actor": "work", "options": {"machine": {"size": "huge"}}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("options.machine")


async def test_unknown_queue_404_and_unknown_actor_422(
    api: httpx.AsyncClient, redis_client: redis.Redis, redis_prefix: str
) -> None:
    r = await _enqueue(api, {"actor": "work"}, queue="nope")
    assert r.status_code == 404 and r.json()["error"] == "unknown_queue"
    r = await _enqueue(api, {"actor": "x"})  # allowed on "other", not on "jobs"
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["field"] == "actor" and "resize, work" in error["fix"]
    assert _keys(redis_client, redis_prefix) == set()


async def test_body_not_json_is_400(api: httpx.AsyncClient) -> None:
    # the nesting is deeper than the JSON parser allows, yet the body is under max_body_bytes
    for content in (b"{nope", b'{"actor": NaN}', b"\xff\xfe\x00", b"[" * 2000 + b"]" * 2000):
        r = await api.post("/v1/queues/jobs/messages", content=content, headers=AUTH)
        assert r.status_code == 400, content[:10]
        assert r.json()["error"] == "invalid_json"
    r = await api.post("/v1/queues/jobs/messages", content=b"[]", headers=AUTH)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "(body)"


async def test_body_over_the_limit_is_413_declared_or_chunked(
    api: httpx.AsyncClient, metrics: Metrics, redis_client: redis.Redis, redis_prefix: str
) -> None:
    big = json.dumps({"actor": "work", "args": ["x" * 5000]}).encode()
    r = await api.post("/v1/queues/jobs/messages", content=big, headers=AUTH)
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    r = await api.post("/v1/queues/jobs/messages", content=chunks(), headers=AUTH)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and _rejected(metrics, 413) == 2
    lying = {**AUTH, "Content-Length": "10"}
    r = await api.post("/v1/queues/jobs/messages", content=chunks(), headers=lying)
    assert r.status_code == 413
    assert _keys(redis_client, redis_prefix) == set()


# -- the write, as dramatiq sees it ----------------------------------------------------------------

async def test_accepted_message_is_consumed_by_a_real_dramatiq_consumer(
    api: httpx.AsyncClient, broker: RedisBroker
) -> None:
    r = await _enqueue(api, {
        "actor": "resize", "args": [1, "a"], "kwargs": {"w": 2},
        "options": {"machine": {"size": "performance-2x", "region": "ord"}, "max_retries": 2,
                    "time_limit_ms": 60000},
    })
    assert r.status_code == 202
    body = r.json()
    assert body["queue"] == "jobs" and body["state"] == "queued"
    assert r.headers["location"] == f"/v1/messages/{body['message_id']}"
    consumer = broker.consume("jobs", prefetch=1, timeout=100)
    try:
        proxy = next(consumer)
        assert proxy is not None
        assert (proxy.message_id, proxy.actor_name) == (body["message_id"], "resize")
        assert proxy.args == (1, "a") and proxy.kwargs == {"w": 2}
        assert proxy.options["fly_machine"] == {"cpu_kind": "performance", "cpus": 2,
                                                "memory_mb": 4096, "region": "ord"}
        assert proxy.options["max_retries"] == 2 and proxy.options["time_limit"] == 60000
        assert proxy.options["enqueued_at"] >= proxy.message_timestamp
        consumer.ack(proxy)
    finally:
        consumer.close()
    assert broker.do_qsize("jobs") == 0


async def test_layout_matches_a_dramatiq_producer_with_scaler_middleware(
    api: httpx.AsyncClient, broker: RedisBroker, redis_client: redis.Redis, redis_prefix: str
) -> None:
    broker.add_middleware(ScalerMiddleware(prefix=redis_prefix))

    @dramatiq.actor(broker=broker, queue_name="jobs", actor_name="work")
    def work(n: int) -> None:
        """Never run: only sent."""

    sent = work.send_with_options(args=(1,), delay=5000)
    r = await _enqueue(api, {"actor": "work", "args": [1], "options": {"delay_ms": 5000}})
    assert r.status_code == 202 and r.json()["eta_ms"] > 0
    stored = {
        json.loads(v)["message_id"]: json.loads(v)
        for v in redis_client.hvals(f"{redis_prefix}:jobs.DQ.msgs")
    }
    ours, theirs = stored[r.json()["message_id"]], stored[sent.message_id]
    assert set(ours) == set(theirs) and set(ours["options"]) == set(theirs["options"])
    assert ours["queue_name"] == theirs["queue_name"] == "jobs.DQ"
    assert ours["options"]["enqueued_at"] == ours["options"]["eta"]
    assert redis_client.llen(f"{redis_prefix}:jobs.DQ") == 2


async def test_wake_is_published_for_an_immediate_message(
    api: httpx.AsyncClient, aredis: aioredis.Redis, redis_prefix: str
) -> None:
    async with aredis.pubsub() as pubsub:
        await pubsub.subscribe(f"{redis_prefix}:wake")
        first = await pubsub.get_message(timeout=2)
        assert first is not None and first["type"] == "subscribe"
        assert (await _enqueue(api, {"actor": "work"})).status_code == 202
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    assert message is not None and message["data"] == b"jobs"


async def test_same_message_id_is_idempotent_and_reuse_conflicts(
    api: httpx.AsyncClient, redis_client: redis.Redis, redis_prefix: str, metrics: Metrics
) -> None:
    mid = str(uuid.uuid4())
    body = {"actor": "work", "args": [1], "message_id": mid.upper()}
    first = await _enqueue(api, body)
    again = await _enqueue(api, body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["message_id"] == again.json()["message_id"] == mid
    assert again.json()["state"] == "queued"
    assert redis_client.llen(f"{redis_prefix}:jobs") == 1
    assert redis_client.hlen(f"{redis_prefix}:jobs.msgs") == 1
    r = await _enqueue(api, {**body, "args": [2]})
    assert r.status_code == 409
    r = await _enqueue(api, {**body, "actor": "x"}, queue="other")
    assert r.status_code == 409
    assert redis_client.llen(f"{redis_prefix}:jobs") == 1
    assert not redis_client.exists(f"{redis_prefix}:other")
    assert metrics.registry.get_sample_value(
        "fly_scaler_http_enqueued_total", {"queue": "jobs"}) == 1
    assert redis_client.ttl(record_key(redis_prefix, mid)) > 6 * 24 * 3600


async def test_redis_down_is_503_and_nothing_is_claimed_accepted(redis_prefix: str) -> None:
    port = free_port()
    dead = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1,
                          retry=Retry(NoBackoff(), 0))
    metrics = Metrics()
    app = create_http_app(metrics=metrics, redis=dead, namespace=redis_prefix,
                          prefix=redis_prefix, queues=QUEUES, tokens=[Secret(TOKEN)],
                          ready=Ready())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://s") as client:
            r = await client.post("/v1/queues/jobs/messages", json={"actor": "work"},
                                  headers=AUTH)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            r = await client.get(f"/v1/messages/{uuid.uuid4()}", headers=AUTH)
            assert r.status_code == 503
    finally:
        await dead.aclose()
    assert _rejected(metrics, 503) == 1
    assert metrics.registry.get_sample_value(
        "fly_scaler_http_enqueued_total", {"queue": "jobs"}) is None


# -- state lookup ---------------------------------------------------------------------------------

async def _state(api: httpx.AsyncClient, mid: str) -> dict[str, Any]:
    r = await api.get(f"/v1/messages/{mid}", headers=AUTH)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_state_queued_claimed_running_done(
    api: httpx.AsyncClient, aredis: aioredis.Redis, redis_client: redis.Redis, redis_prefix: str
) -> None:
    mid = (await _enqueue(api, {"actor": "work"})).json()["message_id"]
    assert await _state(api, mid) == {"message_id": mid, "queue": "jobs", "state": "queued"}
    claims = ClaimStore(aredis, namespace=redis_prefix, prefix=redis_prefix)
    [claim] = await claims.claim("jobs", "thumbs", 1, now_ms=1000, fence=UNFENCED)
    state = await _state(api, mid)
    assert state["state"] == "claimed" and state["machine_name"] == claim.machine_name
    assert state["launch"] == 1
    runner = RunnerClaim(redis_client, namespace=redis_prefix, prefix=redis_prefix, queue="jobs",
                         redis_message_id=claim.redis_message_id, launch=claim.launch)
    assert runner.mark_running("m-123", now_ms=2000)
    state = await _state(api, mid)
    assert (state["state"], state["machine_id"]) == ("running", "m-123")
    assert runner.finish("ack", now_ms=3000)
    assert (await _state(api, mid))["state"] == "done"


async def test_state_dead_lettered_with_the_scalers_reason(
    api: httpx.AsyncClient, aredis: aioredis.Redis, redis_prefix: str
) -> None:
    mid = (await _enqueue(api, {"actor": "work"})).json()["message_id"]
    claims = ClaimStore(aredis, namespace=redis_prefix, prefix=redis_prefix)
    [claim] = await claims.claim("jobs", "thumbs", 1, now_ms=1000, fence=UNFENCED)
    await claims.dead_letter("jobs", claim.redis_message_id, "bad machine size", UNFENCED, 3000)
    state = await _state(api, mid)
    assert (state["state"], state["reason"]) == ("dead_lettered", "bad machine size")


async def test_state_running_in_a_worker_pool_then_nacked(
    api: httpx.AsyncClient, broker: RedisBroker
) -> None:
    mid = (await _enqueue(api, {"actor": "work"})).json()["message_id"]
    consumer = broker.consume("jobs", prefetch=1, timeout=100)
    try:
        proxy = next(consumer)
        assert proxy is not None and proxy.message_id == mid
        state = await _state(api, mid)
        assert state["state"] == "running" and "machine_id" not in state
        consumer.nack(proxy)
    finally:
        consumer.close()
    state = await _state(api, mid)
    assert state["state"] == "dead_lettered" and "reason" not in state


async def test_state_follows_a_delayed_message_through_promotion(
    api: httpx.AsyncClient, broker: RedisBroker, redis_client: redis.Redis, redis_prefix: str
) -> None:
    r = await _enqueue(api, {"actor": "work", "options": {"delay_ms": 60_000}})
    mid, eta = r.json()["message_id"], r.json()["eta_ms"]
    assert await _state(api, mid) == {"message_id": mid, "queue": "jobs", "state": "queued",
                                      "eta_ms": eta}
    # Promote it as dramatiq's worker does: re-enqueue without eta (a new redis_message_id),
    # then drop the delayed copy.
    [(old_rmid, raw)] = redis_client.hgetall(f"{redis_prefix}:jobs.DQ.msgs").items()
    assert isinstance(old_rmid, bytes) and isinstance(raw, bytes)
    message = dramatiq.Message.decode(raw)
    del message.options["eta"]
    promoted = broker.enqueue(message.copy(queue_name="jobs"))
    redis_client.hdel(f"{redis_prefix}:jobs.DQ.msgs", old_rmid)
    redis_client.lrem(f"{redis_prefix}:jobs.DQ", 0, old_rmid.decode())
    assert await _state(api, mid) == {"message_id": mid, "queue": "jobs", "state": "queued"}
    record = redis_client.hget(record_key(redis_prefix, mid), "redis_message_id")
    assert record == promoted.options["redis_message_id"].encode()  # relinked: next lookup O(1)


async def test_every_message_the_scaler_claimed_has_a_state_however_it_was_sent(
    api: httpx.AsyncClient, aredis: aioredis.Redis, redis_client: redis.Redis,
    redis_prefix: str, broker: RedisBroker,
) -> None:
    plain = broker.enqueue(dramatiq.Message("jobs", "work", (), {}, {}))  # no ScalerMiddleware
    broker.add_middleware(ScalerMiddleware(prefix=redis_prefix))
    sent = broker.enqueue(dramatiq.Message("jobs", "work", (), {}, {}))
    r = await api.get(f"/v1/messages/{sent.message_id}", headers=AUTH)
    assert r.status_code == 404  # only Redis has seen it yet: no record of it is kept
    claims = ClaimStore(aredis, namespace=redis_prefix, prefix=redis_prefix)
    taken = await claims.claim("jobs", "thumbs", 2, now_ms=1000, fence=UNFENCED)
    assert (await _state(api, plain.message_id))["state"] == "claimed"  # the scaler dispatched it
    claim = next(c for c in taken if c.message_id == sent.message_id)
    runner = RunnerClaim(redis_client, namespace=redis_prefix, prefix=redis_prefix, queue="jobs",
                         redis_message_id=claim.redis_message_id, launch=claim.launch)
    assert runner.mark_running("m-9", now_ms=2000)
    assert runner.finish("nack", now_ms=3000, machine_id="m-9", error="RuntimeError: boom",
                         message_id=sent.message_id)
    state = await _state(api, sent.message_id)
    assert (state["state"], state["reason"], state["machine_id"]) == (
        "dead_lettered", "RuntimeError: boom", "m-9")


async def test_state_unknown_and_malformed_ids(api: httpx.AsyncClient) -> None:
    r = await api.get(f"/v1/messages/{uuid.uuid4()}", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "unknown_message"
    r = await api.get("/v1/messages/12345", headers=AUTH)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "message_id"


async def test_queue_names_are_checked_when_the_app_is_built(aredis: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="not a dramatiq queue name"):
        create_http_app(metrics=Metrics(), redis=aredis, namespace="n", prefix="p",
                        queues={"bad queue": QueueInfo(frozenset({"a"}))}, tokens=[],
                        ready=Ready())


# -- the Python client, over real HTTP ------------------------------------------------------------

@pytest.fixture
def served_url(redis_url: str, redis_prefix: str) -> Iterator[str]:
    """The app served by uvicorn on a loopback socket (listening before the thread starts)."""
    sock = socket.create_server(("127.0.0.1", 0))
    client = aioredis.Redis.from_url(redis_url)
    app = create_http_app(metrics=Metrics(), redis=client, namespace=redis_prefix,
                          prefix=redis_prefix, queues=QUEUES, tokens=[Secret(TOKEN)],
                          ready=Ready())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await client.aclose()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()
    assert not thread.is_alive()


def test_client_enqueues_retries_idempotently_and_reports_errors(served_url: str) -> None:
    with EnqueueClient(served_url, TOKEN, backoff_s=0) as client:
        assert TOKEN not in repr(client)
        sent = client.enqueue("jobs", "work", args=[1], machine={"cpus": 2, "memory_mb": 512},
                              delay_ms=60_000)
        assert sent["state"] == "queued" and sent["eta_ms"] > 0
        assert client.state(sent["message_id"])["eta_ms"] == sent["eta_ms"]
        again = client.enqueue("jobs", "work", args=[1], machine={"cpus": 2, "memory_mb": 512},
                               delay_ms=60_000, message_id=sent["message_id"])
        assert again["message_id"] == sent["message_id"]
        with pytest.raises(EnqueueError) as refused:
            client.enqueue("jobs", "work", machine={"cpus": 3})
        assert refused.value.status == 422
        assert refused.value.body["errors"][0]["field"] == "options.machine.cpus"
        assert "options.machine.cpus" in refused.value.fields
        assert "options.machine.cpus: " in str(refused.value)  # the field, in the message itself
    with EnqueueClient(served_url, "wrong") as client, pytest.raises(EnqueueError) as denied:
        client.state(str(uuid.uuid4()))
    assert denied.value.status == 403 and "wrong" not in str(denied.value)


def test_client_retries_a_503_with_the_same_message_id() -> None:
    # A proxy answering 503 once cannot be produced locally, hence the mock transport.
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if len(seen) == 1:
            return httpx.Response(503, json={"error": "unavailable", "message": "retry"})
        return httpx.Response(202, json={"message_id": seen[-1]["message_id"], "queue": "jobs",
                                         "state": "queued"})

    with EnqueueClient("http://scaler", TOKEN, backoff_s=0,
                       transport=httpx.MockTransport(handler)) as client:
        sent = client.enqueue("jobs", "work")
    assert len(seen) == 2 and seen[0]["message_id"] == seen[1]["message_id"] == sent["message_id"]


async def test_request_id_is_answered_and_bound_to_log_events(api: httpx.AsyncClient) -> None:
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    r = await api.post("/v1/queues/jobs/messages", json={"actor": "work", "args": [1]},
                       headers={**AUTH, "x-request-id": "req-123"})
    assert r.status_code == 202, r.text
    assert r.headers["x-request-id"] == "req-123"
    events = [e for e in capture.entries if e["event"] == "http.enqueued"]
    assert events and events[0]["request_id"] == "req-123"
    fresh = await api.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert fresh.headers["x-request-id"] != "bad id with spaces"
    assert len(fresh.headers["x-request-id"]) == 16
