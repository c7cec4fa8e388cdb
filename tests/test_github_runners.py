"""GitHub runners end to end through the scaler's own loop: webhooks into the real Redis, ticks of
the reconciler against the local Machines API (process runtime), and the local GitHub stand-in
for JIT configs, runner registrations and queued-job listings, all over real HTTP.

Covered: one machine per queued job carrying its JIT config and no other secret (canaries checked
in machine env and metadata, logs and metrics); a runner running another job than the one it was
launched for; cancellation before a machine exists and while a surplus runner idles; a runner that
never gets a job; a lost webhook recovered by resync; GitHub's 403/429 rate limits on the launch
and the resync."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from scaler.github.launcher import JITCONFIG_ENV
from scaler.github.ledger import job_message_id
from scaler.github.local import ForcedLimit
from scaler.github.local_server import LocalGitHubServer
from scaler.github.runtime import GitHubRuntime
from scaler.github.testing import AppKey
from scaler.jobs.keys import QueueKeys, message_record_key
from scaler.policy import runners as runner_rules
from scaler.telemetry.metrics import Metrics
from tests.github_scaler import API_TOKEN, WEBHOOK_SECRET, github_settings, queue_job
from tests.github_world import QUEUE, World
from tests.scaler_harness import eventually

pytest_plugins = ["scaler.github.pytest_plugin", "tests.github_world"]


@pytest.mark.parametrize("app_auth", [False, True], ids=["token", "app"])
async def test_one_queued_job_gets_one_runner_machine_with_its_jit_config_and_no_other_secret(
    world_factory: Any, app_auth: bool, github_app_key: AppKey,
) -> None:
    w: World = await world_factory(app_auth=app_auth)
    job = queue_job(w.github)
    with capture_logs() as logs:
        assert (await w.deliver(job, "queued"))["result"] == "queued"
        await w.tick()
        await w.deliver(job, "queued")  # a second delivery of the same job: nothing new
        await w.tick()
    ms = w.machines()
    assert len(ms) == 1, [e for e in logs if e.get("log_level") in ("warning", "error")]
    machine = ms[0]
    env = machine["config"]["env"]
    # The JIT config the stand-in issued for exactly this runner name, and nothing else secret.
    (runner,) = w.github.state.all_runners()
    assert runner["name"] == machine["name"]
    assert sorted(label["name"] for label in runner["labels"]) == ["fly", "self-hosted"]
    assert env[JITCONFIG_ENV] == w.github.state.jit_configs[runner["id"]]
    assert set(env) == {JITCONFIG_ENV, "RUNNER_WORKDIR"}
    installation_tokens = list(w.github.state.tokens)
    assert bool(installation_tokens) == app_auth
    fly_token = w.settings.fly.token
    assert fly_token is not None
    pem_lines = [line for line in github_app_key.private_pem.get_secret_value().splitlines()
                 if len(line) > 20]
    canaries = [WEBHOOK_SECRET, API_TOKEN, fly_token.get_secret_value(), *installation_tokens,
                *pem_lines]
    everything_else = json.dumps({k: v for k, v in machine.items() if k != "config"}) + \
        json.dumps({**machine["config"], "env": {k: v for k, v in env.items()
                                                 if k != JITCONFIG_ENV}})
    rendered = w.runtime.metrics.render().decode()
    log_text = json.dumps(logs, default=str)
    for canary in canaries:
        assert canary not in everything_else and canary not in env[JITCONFIG_ENV]
        assert canary not in rendered and canary not in log_text
    # The JIT config itself is in no log line and no metric, and not in the metadata.
    assert env[JITCONFIG_ENV] not in log_text and env[JITCONFIG_ENV] not in rendered
    assert env[JITCONFIG_ENV] not in json.dumps(machine["config"].get("metadata"))
    # Exactly one machine of all (no other machine got a config).
    assert sum(1 for m in w.machines() if JITCONFIG_ENV in m["config"]["env"]) == 1
    assert w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_runners_launched_total", {"pool": "gh", "result": "registered"}) == 1


async def test_a_runner_that_ran_another_jobs_work_ends_its_own_claim_and_the_count_stays_right(
    world_factory: Any,
) -> None:
    w: World = await world_factory()
    x, y = queue_job(w.github), queue_job(w.github)
    await w.deliver(x, "queued")
    await w.tick()
    (first,) = w.machines()
    # GitHub gives job y (not x) to the runner launched for x.
    (runner,) = w.github.state.all_runners()
    w.github.state.start_job(y, runner["id"])
    await w.deliver(y, "queued")  # y's own webhook arrives late
    started = await w.deliver(y, "in_progress")
    assert started["result"] == "started"
    await w.tick()
    # y's message stands for x now: one more runner, for the one job still queued.
    assert len(w.machines()) == 2
    w.github.state.complete_job(y)
    done = await w.deliver(y, "completed")
    assert done == {"result": "completed", "outcome": "ran"}
    record = await w.redis.hgetall(
        message_record_key(w.settings.redis.prefix, job_message_id(x)))
    assert record[b"state"] == b"done"  # the claim of the runner that ran y ended
    finished = await w.redis.hgetall(f"{w.settings.redis.prefix}:finished")
    assert first["id"].encode() in finished
    assert w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_jobs_started_total", {"pool": "gh"}) == 1
    hist = w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_queue_to_started_seconds_count", {"pool": "gh"})
    assert hist == 1


async def test_a_job_cancelled_before_its_machine_exists_launches_nothing(
    world_factory: Any,
) -> None:
    w: World = await world_factory()
    job = queue_job(w.github)
    await w.deliver(job, "queued")
    w.github.state.complete_job(job, "cancelled")
    assert (await w.deliver(job, "completed"))["outcome"] == "withdrawn"
    await w.tick()
    eventually(lambda: w.machines() == [], what="the runner machines destroyed")
    assert w.runner_names() == set()


async def test_a_job_cancelled_while_its_runner_idles_withdraws_that_runner(
    world_factory: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_rules, "SURPLUS_MIN_IDLE_S", 0.0)
    w: World = await world_factory()
    job = queue_job(w.github)
    await w.deliver(job, "queued")
    await w.tick()
    (machine,) = w.machines()
    eventually(lambda: w.machines()[0]["state"] == "started", what="the runner machine started")
    w.github.state.complete_job(job, "cancelled")
    await w.deliver(job, "completed")
    result = await w.tick()
    assert any(d.kind == "withdraw" and d.reason == "surplus" for d in result.plan.decisions)
    eventually(lambda: w.machines() == [], what="the runner machines destroyed")
    assert machine["name"] not in w.runner_names()  # its registration removed
    assert await w.ready_count() == 0  # and nothing relaunches it
    await w.tick()
    eventually(lambda: w.machines() == [], what="the runner machines destroyed")


async def test_a_job_cancelled_while_it_runs_ends_its_runners_claim(world_factory: Any) -> None:
    w: World = await world_factory()
    job = queue_job(w.github)
    await w.deliver(job, "queued")
    await w.tick()
    (runner,) = w.github.state.all_runners()
    w.github.state.start_job(job, runner["id"])
    await w.deliver(job, "in_progress")
    w.github.state.complete_job(job, "cancelled")
    assert (await w.deliver(job, "completed"))["outcome"] == "ran"
    claims = await w.redis.hgetall(f"{w.settings.redis.prefix}:claims:{QUEUE}")
    assert claims == {}
    assert await w.ready_count() == 0


async def test_a_runner_that_never_gets_a_job_is_destroyed_deregistered_and_its_job_relaunched(
    world_factory: Any,
) -> None:
    w: World = await world_factory(github={"runner_idle_timeout": "1s"})
    job = queue_job(w.github, labels=("self-hosted", "fly"))
    await w.deliver(job, "queued")
    await w.tick()
    (first,) = w.machines()
    eventually(lambda: w.machines() and w.machines()[0]["state"] == "started",
               what="the runner machine started")
    assert first["name"] in w.runner_names()
    await asyncio.sleep(1.2)  # the machine's own started_at is Fly's clock: no fake one here
    result = await w.tick()
    assert any(d.reason == "idle_timeout" for d in result.plan.decisions)
    assert first["name"] not in w.runner_names()
    assert all(m["id"] != first["id"] for m in w.machines())
    await w.tick()  # the job is still queued on GitHub: a second runner is launched for it
    names = [m["name"] for m in w.machines()]
    assert len(names) == 1 and names[0] != first["name"] and names[0].endswith("-2")
    assert w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_runners_reaped_total", {"pool": "gh", "reason": "idle_timeout"}) == 1


async def test_a_lost_webhook_is_recovered_by_the_resync(world_factory: Any) -> None:
    w: World = await world_factory()
    job = queue_job(w.github)  # its webhook never comes
    other = queue_job(w.github, labels=("self-hosted", "gpu"))  # no pool: never queued
    assert await w.runtime.resync() == 1
    assert await w.runtime.resync() == 0  # known now
    await w.tick()
    (machine,) = w.machines()
    record = await w.redis.hgetall(message_record_key(w.settings.redis.prefix,
                                                      job_message_id(job)))
    assert record
    assert not await w.redis.exists(message_record_key(w.settings.redis.prefix,
                                                       job_message_id(other)))
    assert w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_jobs_queued_total", {"pool": "gh", "source": "resync"}) == 1
    assert machine["config"]["env"][JITCONFIG_ENV]
    # the remaining budget is exported from GitHub's headers
    remaining = w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_rate_limit_remaining", {})
    assert remaining is not None and 0 < remaining < 5000


async def test_a_fork_found_by_resync_is_refused(world_factory: Any) -> None:
    w: World = await world_factory()
    queue_job(w.github, event="pull_request", head_repository="mallory/api")
    assert await w.runtime.resync() == 0
    await w.tick()
    eventually(lambda: w.machines() == [], what="the runner machines destroyed")


@pytest.mark.parametrize("limit", [
    ForcedLimit("secondary", status=429, retry_after=600),
    ForcedLimit("primary", status=403, reset_in=600),
])
async def test_a_rate_limited_launch_makes_no_machine_and_backs_off(
    world_factory: Any, limit: ForcedLimit,
) -> None:
    w: World = await world_factory()
    job = queue_job(w.github)
    await w.deliver(job, "queued")
    w.github.state.force_limit(limit, count=5)
    with capture_logs() as logs:
        await w.tick()
    eventually(lambda: w.machines() == [], what="the runner machines destroyed")
    assert w.runner_names() == set()
    assert any(e["event"] == "github runner not registered" for e in logs)
    claims = await w.redis.hgetall(f"{w.settings.redis.prefix}:claims:{QUEUE}")
    (claim,) = [json.loads(v) for v in claims.values()]
    assert claim.get("failed_at") and "github" in claim.get("last_error", "")
    # While GitHub's limit holds, the resync sends nothing either.
    before = len(w.github.state.requests)
    assert await w.runtime.resync() == 0
    assert len(w.github.state.requests) == before
    assert w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_api_calls_total",
        {"operation": "generate_jitconfig", "code": str(limit.status)}) is not None


async def test_refused_credentials_are_named_once_for_readyz_and_cleared_by_a_success(
    github_api_factory: Any, redis_prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    github: LocalGitHubServer = github_api_factory(static_tokens=[API_TOKEN])
    queue_job(github)
    bad = github_settings(redis_prefix, github.url, redis_url=redis_url,
                          env={"SCALER_GITHUB_TOKEN": "ghtok-wrong-000000000"})
    runtime = GitHubRuntime(bad, aredis, Metrics())
    with capture_logs() as logs:
        assert await runtime.resync() == 0
        assert await runtime.resync() == 0
    assert runtime.problem is not None and "401" in runtime.problem
    assert "ghtok-wrong" not in runtime.problem
    assert len([e for e in logs if e["event"] == "github refused the scaler's credentials"]) == 1
    await runtime.aclose()
    good = GitHubRuntime(github_settings(redis_prefix, github.url, redis_url=redis_url), aredis,
                         Metrics())
    good.problem = runtime.problem
    assert await good.resync() == 1
    assert good.problem is None
    await good.aclose()


async def test_a_runner_taking_a_job_whose_webhook_was_lost_gets_its_own_job_a_new_runner(
    world_factory: Any,
) -> None:
    w: World = await world_factory()
    lost = queue_job(w.github)  # the oldest job: its queued webhook never comes
    job = queue_job(w.github)
    await w.deliver(job, "queued")
    await w.tick()
    (first,) = w.machines()
    (runner,) = w.github.state.all_runners()
    w.github.state.start_job(lost, runner["id"])  # GitHub hands the oldest job to our runner
    await w.deliver(lost, "in_progress")
    # `job` still waits on GitHub and its message is used up: a replacement stands for it.
    assert await w.ready_count() == 1
    await w.tick()
    assert len(w.machines()) == 2
    w.github.state.complete_job(lost)
    assert (await w.deliver(lost, "completed"))["outcome"] == "ran"
    assert await w.runtime.resync() == 0  # nothing more: the count is whole
    await w.tick()
    assert len([m for m in w.machines() if m["id"] != first["id"]]) == 1


async def test_a_job_whose_completed_webhook_was_lost_is_dropped_by_the_resync(
    github_api_factory: Any, redis_prefix: str, redis_url: str, aredis: aioredis.Redis,
) -> None:
    github: LocalGitHubServer = github_api_factory(static_tokens=[API_TOKEN])
    now = [1_000_000.0]
    runtime = GitHubRuntime(github_settings(redis_prefix, github.url, redis_url=redis_url),
                            aredis, Metrics(), clock=lambda: now[0])
    gone, fresh = queue_job(github), queue_job(github)
    assert await runtime.resync() == 2
    github.state.complete_job(gone, "cancelled")  # and its webhook is lost
    github.state.complete_job(fresh, "cancelled")
    now[0] += 30.0  # too recent to trust a listing's absence
    await runtime.resync()
    assert await runtime.ledger.queued_counts(["gh"]) == {"gh": 2}
    now[0] += 120.0
    await runtime.resync()
    assert await runtime.ledger.queued_counts(["gh"]) == {"gh": 0}
    ready = QueueKeys(runtime.settings.redis.namespace, runtime.settings.redis.prefix, QUEUE).ready
    assert await aredis.llen(ready) == 0  # their waiting messages withdrawn: no runner for them
    await runtime.aclose()


async def test_a_runner_machine_still_alive_after_its_job_completed_is_destroyed_after_the_grace(
    world_factory: Any,
) -> None:
    w: World = await world_factory(scaler={"orphan_grace": "1s"})
    job = queue_job(w.github)
    await w.deliver(job, "queued")
    await w.tick()
    (machine,) = w.machines()
    eventually(lambda: w.machines()[0]["state"] == "started", what="the runner machine started")
    (runner,) = w.github.state.all_runners()
    w.github.state.start_job(job, runner["id"])
    await w.deliver(job, "in_progress")
    w.github.state.complete_job(job)
    await w.deliver(job, "completed")
    await w.tick()  # the machine is exiting: left alone within the grace
    assert [m["id"] for m in w.machines()] == [machine["id"]]
    await asyncio.sleep(1.2)
    result = await w.tick()
    assert any(d.reason == "finished_lingering" for d in result.plan.decisions)
    eventually(lambda: w.machines() == [], what="the runner machines destroyed")
    assert await w.runtime.ledger.runners([machine["name"]]) == {}  # its record is gone


async def test_a_second_launch_under_the_same_name_replaces_the_registration(
    world_factory: Any,
) -> None:
    from scaler.fly.models import CreateMachineRequest, FlyMachineConfig

    w: World = await world_factory()
    pool = w.settings.pools[0]
    request = CreateMachineRequest(name="gh-abc-1", config=FlyMachineConfig(image="runner"))
    first = await w.runtime.launcher.prepare(pool, request)
    # The scaler stopped after registering, before its create landed: the claim is relaunched.
    second = await w.runtime.launcher.prepare(pool, request)
    runners = [r for r in w.github.state.all_runners() if r["name"] == "gh-abc-1"]
    assert len(runners) == 1  # GitHub answered 409; the old registration was removed first
    assert first.config.env[JITCONFIG_ENV] != second.config.env[JITCONFIG_ENV]
    assert second.config.env[JITCONFIG_ENV] == w.github.state.jit_configs[runners[0]["id"]]
    assert second.skip_secrets is True
