"""POST /v1/webhooks/github on the scaler's HTTP app, against the real Redis and deliveries shaped
by the local GitHub stand-in: signatures (valid, invalid, missing, a modified body, GitHub's
documented vector), redelivery, ping and other events, malformed and oversized bodies, routing
and its refusals, and a job's queued -> in_progress -> completed path through the pool's queue."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from scaler.config import Settings
from scaler.github.events import MAX_BODY_BYTES
from scaler.github.ledger import job_message_id
from scaler.github.local_server import LocalGitHubServer
from scaler.github.runtime import GitHubRuntime
from scaler.github.signature import SIGNATURE_HEADER
from scaler.http.app import create_http_app
from scaler.jobs.keys import QueueKeys, message_record_key
from scaler.telemetry.metrics import Metrics
from tests.github_scaler import REPO, WEBHOOK_SECRET, github_settings, queue_job, signed

pytest_plugins = ["scaler.github.pytest_plugin"]

VECTOR = json.loads((Path(__file__).parent / "data/github/webhook-signature-test-vector.json")
                    .read_text())
QUEUE = "gh-jobs"


@pytest.fixture
def settings(redis_prefix: str, redis_url: str, github_api: LocalGitHubServer) -> Settings:
    return github_settings(redis_prefix, github_api.url, redis_url=redis_url)


@pytest.fixture
async def runtime(settings: Settings, aredis: aioredis.Redis) -> AsyncIterator[GitHubRuntime]:
    rt = GitHubRuntime(settings, aredis, Metrics())
    yield rt
    await rt.aclose()


@pytest.fixture
async def scaler(runtime: GitHubRuntime, aredis: aioredis.Redis,
                 settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_http_app(
        metrics=runtime.metrics, redis=aredis, namespace=settings.redis.namespace,
        prefix=settings.redis.prefix, queues={}, tokens=[], ready=lambda: (True, "ok"),
        github_webhook=runtime.webhook.handle,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://scaler") as client:
        yield client


def keys(settings: Settings) -> QueueKeys:
    return QueueKeys(settings.redis.namespace, settings.redis.prefix, QUEUE)


async def ready_ids(aredis: aioredis.Redis, settings: Settings) -> list[bytes]:
    return list(await aredis.lrange(keys(settings).ready, 0, -1))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def post(scaler: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await scaler.post("/v1/webhooks/github", content=body, headers=headers)


def payload(github: LocalGitHubServer, job_id: int, action: str, **kw: Any) -> dict[str, Any]:
    return github.state.webhook_payload(job_id, action, **kw)


# -- signatures ------------------------------------------------------------------------------


async def test_a_signed_queued_job_becomes_one_message_of_its_pools_queue(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings, runtime: GitHubRuntime,
) -> None:
    job = queue_job(github_api)
    r = await post(scaler, *signed(payload(github_api, job, "queued")))
    assert r.status_code == 202, r.text
    assert r.json() == {"result": "queued", "pool": "gh"}
    ids = await ready_ids(aredis, settings)
    assert len(ids) == 1
    record = await aredis.hgetall(message_record_key(settings.redis.prefix, job_message_id(job)))
    assert record[b"queue"] == QUEUE.encode() and record[b"redis_message_id"] == ids[0]
    body = json.loads(await aredis.hget(keys(settings).msgs, ids[0]))
    assert body["message_id"] == f"github-job-{job}"
    assert body["kwargs"]["job_id"] == job and body["kwargs"]["repository"] == REPO
    assert sample(runtime.metrics, "fly_scaler_github_jobs_queued_total", pool="gh",
                  source="webhook") == 1
    assert sample(runtime.metrics, "fly_scaler_github_webhook_deliveries_total",
                  result="queued") == 1


@pytest.mark.parametrize("how", ["wrong_secret", "missing", "modified_body", "not_hex"])
async def test_a_bad_signature_is_401_and_changes_nothing(
    how: str, scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings, runtime: GitHubRuntime,
) -> None:
    job = queue_job(github_api)
    body, headers = signed(payload(github_api, job, "queued"),
                           secret="not the secret" if how == "wrong_secret" else WEBHOOK_SECRET)
    if how == "missing":
        del headers[SIGNATURE_HEADER]
    elif how == "modified_body":
        body = body.replace(b'"fly"', b'"FLY"')
    elif how == "not_hex":
        headers[SIGNATURE_HEADER] = "sha256=" + "zz" * 32
    r = await post(scaler, body, headers)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_signature"
    assert await ready_ids(aredis, settings) == []
    assert [k async for k in aredis.scan_iter(f"{settings.redis.prefix}:github:*")] == []
    assert sample(runtime.metrics, "fly_scaler_github_webhook_deliveries_total",
                  result="invalid_signature") == 1


async def test_githubs_documented_test_vector_passes_the_route(
    aredis: aioredis.Redis, settings: Settings,
) -> None:
    # The documented vector signs "Hello, World!" with its own secret: as a ping delivery to a
    # scaler holding that secret, the signature passes and the ping is acknowledged.
    vector_settings = settings.model_copy(update={"github": settings.github.model_copy(
        update={"webhook_secret": type(settings.github.webhook_secret)(VECTOR["secret"])})})
    rt = GitHubRuntime(vector_settings, aredis, Metrics())
    app = create_http_app(metrics=rt.metrics, redis=aredis, namespace="n", prefix="p", queues={},
                          tokens=[], ready=lambda: (True, "ok"), github_webhook=rt.webhook.handle)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://scaler") as client:
        headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "abc-123",
                   SIGNATURE_HEADER: VECTOR["x_hub_signature_256"]}
        ok = await client.post("/v1/webhooks/github", content=VECTOR["payload"].encode(),
                               headers=headers)
        assert ok.status_code == 200 and ok.json()["result"] == "ignored"
        bad = await client.post("/v1/webhooks/github", content=b"Hello, World?",
                                headers=headers)
        assert bad.status_code == 401
    await rt.aclose()


# -- deliveries ------------------------------------------------------------------------------


async def test_a_redelivery_launches_nothing_new(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings, runtime: GitHubRuntime,
) -> None:
    job = queue_job(github_api)
    body, headers = signed(payload(github_api, job, "queued"))
    assert (await post(scaler, body, headers)).status_code == 202
    again = await post(scaler, body, headers)
    assert again.status_code == 200 and again.json() == {"result": "duplicate"}
    # The same job in a new delivery (a second webhook on the same repository) is known too.
    other = await post(scaler, *signed(payload(github_api, job, "queued")))
    assert other.status_code == 200 and other.json()["result"] == "queued"
    assert len(await ready_ids(aredis, settings)) == 1
    assert sample(runtime.metrics, "fly_scaler_github_jobs_queued_total", pool="gh",
                  source="webhook") == 1


async def test_ping_and_other_events_and_actions_are_acknowledged_and_ignored(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings,
) -> None:
    job = queue_job(github_api)
    r = await post(scaler, *signed({"zen": "Keep it simple.", "hook_id": 1}, event="ping"))
    assert r.status_code == 200 and r.json()["reason"] == "ping"
    r = await post(scaler, *signed({"action": "opened"}, event="pull_request"))
    assert r.status_code == 200 and r.json()["reason"] == "other_event"
    other = {**payload(github_api, job, "queued"), "action": "requested"}
    r = await post(scaler, *signed(other))
    assert r.status_code == 200 and r.json()["reason"] == "other_action"
    assert await ready_ids(aredis, settings) == []


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"action": "queued"}'])
async def test_a_malformed_body_is_400_and_changes_nothing(
    body: bytes, scaler: httpx.AsyncClient, aredis: aioredis.Redis, settings: Settings,
) -> None:
    r = await post(scaler, *signed(body))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "malformed"
    assert await ready_ids(aredis, settings) == []
    assert [k async for k in aredis.scan_iter(f"{settings.redis.prefix}:*")] == []


async def test_a_body_over_the_limit_is_413_before_its_signature_is_checked(
    scaler: httpx.AsyncClient, runtime: GitHubRuntime,
) -> None:
    big = b"{" + b" " * MAX_BODY_BYTES + b"}"
    body, headers = signed(big)
    r = await post(scaler, body, headers)
    assert r.status_code == 413
    assert sample(runtime.metrics, "fly_scaler_github_webhook_deliveries_total",
                  result="too_large") == 1


# -- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("labels", "repository", "fork", "reason"), [
    (("self-hosted", "gpu"), REPO, False, "labels"),
    (("self-hosted",), REPO, False, "labels"),
    (("ubuntu-latest",), REPO, False, "labels"),
    (("self-hosted", "fly"), "evil/api", False, "repository"),
    (("self-hosted", "fly"), REPO, True, "fork"),
])
async def test_a_refused_job_is_logged_counted_and_never_queued(
    labels: tuple[str, ...], repository: str, fork: bool, reason: str,
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings, runtime: GitHubRuntime,
) -> None:
    job = queue_job(github_api, labels=labels, repository=repository)
    with capture_logs() as logs:
        r = await post(scaler, *signed(payload(github_api, job, "queued", fork=fork)))
    assert r.status_code == 200 and r.json() == {"result": "refused", "reason": reason}
    assert await ready_ids(aredis, settings) == []
    assert next(e for e in logs if e["event"] == "github job refused")["reason"] == reason
    assert sample(runtime.metrics, "fly_scaler_github_jobs_refused_total", reason=reason) == 1


async def test_labels_match_case_insensitively_and_self_hosted_is_implied(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings,
) -> None:
    a = queue_job(github_api, labels=("FLY",))
    b = queue_job(github_api, labels=("self-hosted", "Fly"))
    for job in (a, b):
        assert (await post(scaler, *signed(payload(github_api, job, "queued")))).status_code == 202
    assert len(await ready_ids(aredis, settings)) == 2


# -- a job's life ------------------------------------------------------------------------------


async def test_completed_before_any_runner_took_it_withdraws_the_waiting_message(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings, runtime: GitHubRuntime,
) -> None:
    job = queue_job(github_api)
    await post(scaler, *signed(payload(github_api, job, "queued")))
    github_api.state.complete_job(job, "cancelled")
    r = await post(scaler, *signed(payload(github_api, job, "completed")))
    assert r.status_code == 200 and r.json() == {"result": "completed", "outcome": "withdrawn"}
    assert await ready_ids(aredis, settings) == []
    assert await aredis.hlen(keys(settings).msgs) == 0
    record = await aredis.hgetall(message_record_key(settings.redis.prefix, job_message_id(job)))
    assert record[b"state"] == b"done" and record[b"reason"] == b"withdrawn"
    assert await runtime.ledger.queued_counts(["gh"]) == {"gh": 0}
    assert sample(runtime.metrics, "fly_scaler_github_jobs_completed_total", pool="gh",
                  outcome="withdrawn") == 1


async def test_a_job_of_no_pool_completing_is_acknowledged_and_changes_nothing(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings,
) -> None:
    job = queue_job(github_api, labels=("ubuntu-latest",))
    github_api.state.complete_job(job)
    r = await post(scaler, *signed(payload(github_api, job, "completed")))
    assert r.status_code == 200 and r.json()["outcome"] == "not_ours"
    assert [k async for k in aredis.scan_iter(f"{settings.redis.prefix}:github:job:*")] == []


async def test_a_job_ended_while_its_own_message_was_claimed_withdraws_another_waiting_one(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings,
) -> None:
    a, b = queue_job(github_api), queue_job(github_api)
    for job in (a, b):
        await post(scaler, *signed(payload(github_api, job, "queued")))
    k = keys(settings)
    # a's message is taken off the queue (as a claim does); b's still waits
    rmid_a = (await aredis.hget(message_record_key(settings.redis.prefix, job_message_id(a)),
                                "redis_message_id"))
    await aredis.lrem(k.ready, 1, rmid_a)
    github_api.state.complete_job(a, "cancelled")
    await post(scaler, *signed(payload(github_api, a, "completed")))
    assert await ready_ids(aredis, settings) == []  # b's message stood for a's demand: gone
    record = await aredis.hgetall(message_record_key(settings.redis.prefix, job_message_id(b)))
    assert record[b"reason"] == b"withdrawn"


async def test_a_queued_delivery_after_its_jobs_completed_one_queues_nothing(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings,
) -> None:
    job = queue_job(github_api)
    queued = payload(github_api, job, "queued")
    github_api.state.complete_job(job, "cancelled")
    await post(scaler, *signed(payload(github_api, job, "completed")))
    r = await post(scaler, *signed(queued))
    assert r.status_code == 200 and r.json()["result"] == "queued"
    assert await ready_ids(aredis, settings) == []


async def test_a_job_taken_by_a_runner_not_ours_gives_up_its_waiting_message(
    scaler: httpx.AsyncClient, github_api: LocalGitHubServer, aredis: aioredis.Redis,
    settings: Settings,
) -> None:
    job = queue_job(github_api)
    await post(scaler, *signed(payload(github_api, job, "queued")))
    assert len(await ready_ids(aredis, settings)) == 1
    other = github_api.state.register_runner(("repo", REPO), "someone-elses", ["self-hosted",
                                                                             "fly"])
    github_api.state.start_job(job, other["runner"]["id"])
    r = await post(scaler, *signed(payload(github_api, job, "in_progress")))
    assert r.json()["result"] == "started"
    assert await ready_ids(aredis, settings) == []  # its demand is gone: no runner launched
