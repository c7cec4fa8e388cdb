"""The resync of pools allowed by organization: it finds the organization's repositories (an App
installation's listing, or the organization's with a token), lists their queued jobs and queues
those whose webhook was lost; never a repository of another organization; the list is kept a few
minutes; an idle repository costs one call; a job the listing no longer shows is asked for before
it is dropped; a resync leaves the budget's last tenth to launches.
Real HTTP to the local GitHub stand-in and the local Machines API, real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from scaler.github.catalog import LIST_TTL_S
from scaler.github.launcher import JITCONFIG_ENV
from scaler.github.ledger import JobRef, job_message_id
from scaler.github.local import Problem
from scaler.github.local_server import LocalGitHubServer
from scaler.github.runtime import GitHubRuntime
from scaler.github.testing import FakeClock
from scaler.jobs.keys import message_record_key
from scaler.telemetry.metrics import Metrics
from tests.github_scaler import API_TOKEN, LABELS, REPO, github_settings, queue_job
from tests.github_world import QUEUE, World

pytest_plugins = ["scaler.github.pytest_plugin", "tests.github_world"]

ORG_ONLY = {"repositories": [], "organizations": ["acme"]}


def paths(github: LocalGitHubServer) -> list[str]:
    return [path for _, path, _ in github.state.requests]


@pytest.mark.parametrize("app_auth", [False, True], ids=["token", "app"])
async def test_an_org_only_pools_lost_webhook_is_recovered_by_the_resync(
    world_factory: Any, app_auth: bool,
) -> None:
    w: World = await world_factory(app_auth=app_auth, **ORG_ONLY)
    job = queue_job(w.github)  # acme/api; its webhook never comes
    other = queue_job(w.github, repository="umbrella/api")  # another organization's
    assert await w.runtime.resync() == 1
    assert await w.runtime.resync() == 0  # known now
    await w.tick()
    (machine,) = w.machines()
    assert machine["config"]["env"][JITCONFIG_ENV]
    (runner,) = w.github.state.all_runners()
    assert runner["scope"] == "org:acme"
    prefix = w.settings.redis.prefix
    assert await w.redis.hgetall(message_record_key(prefix, job_message_id(job)))
    assert not await w.redis.exists(message_record_key(prefix, job_message_id(other)))
    assert w.runtime.metrics.registry.get_sample_value(
        "fly_scaler_github_jobs_queued_total", {"pool": "gh", "source": "resync"}) == 1
    # The repositories were listed once (kept between resyncs), and never the other
    # organization's: not its runs, and not its repositories with a token.
    listing = "/installation/repositories" if app_auth else "/orgs/acme/repos"
    assert paths(w.github).count(listing) == 1
    assert not [p for p in paths(w.github) if "umbrella" in p]


async def test_the_list_is_kept_a_few_minutes_and_an_idle_repository_costs_one_call(
    github_api_factory: Callable[..., LocalGitHubServer], redis_prefix: str, redis_url: str,
    aredis: aioredis.Redis,
) -> None:
    github = github_api_factory(static_tokens=[API_TOKEN])
    now = [1_000_000.0]
    settings = github_settings(redis_prefix, github.url, redis_url=redis_url, pool=ORG_ONLY)
    runtime = GitHubRuntime(settings, aredis, Metrics(), clock=lambda: now[0])
    queue_job(github)
    assert await runtime.resync() == 1
    queue_job(github, repository="acme/new")  # a repository the cached list does not hold yet
    now[0] += LIST_TTL_S - 1
    assert await runtime.resync() == 0
    assert paths(github).count("/orgs/acme/repos") == 1
    now[0] += 2
    assert await runtime.resync() == 1  # the list renewed: acme/new's job found
    assert paths(github).count("/orgs/acme/repos") == 2
    for job_id in list(github.state.jobs):  # completed, and their webhooks came
        github.state.complete_job(job_id)
        await runtime.ledger.completed(job_id, None, {"gh": QUEUE})
    before = len(github.state.requests)
    assert await runtime.resync() == 0
    sent = paths(github)[before:]
    assert sorted(sent) == ["/repos/acme/api/actions/runs", "/repos/acme/new/actions/runs"]
    await runtime.aclose()


async def test_a_resync_leaves_the_last_tenth_of_the_budget_to_launches(
    github_api_factory: Callable[..., LocalGitHubServer], redis_prefix: str, redis_url: str,
    aredis: aioredis.Redis, github_clock: FakeClock,
) -> None:
    github = github_api_factory(static_tokens=[API_TOKEN], rate_limit=30, clock=github_clock)
    for i in range(40):
        github.state.complete_job(queue_job(github, repository=f"acme/r{i:02}"))
    settings = github_settings(redis_prefix, github.url, redis_url=redis_url, pool=ORG_ONLY)
    runtime = GitHubRuntime(settings, aredis, Metrics(), clock=github_clock)
    with capture_logs() as logs:
        assert await runtime.resync() == 0
    runs = [p for p in paths(github) if p.endswith("/actions/runs")]
    assert len(runs) == 27  # after 1 + 27 calls, 2 of 30 left: under a tenth, it stopped
    assert any(e["event"] == "github resync stopped: the API budget is kept for launches"
               for e in logs)
    github_clock.advance(3600)  # the budget was reset: the next resync lists again
    await runtime.resync()
    assert len([p for p in paths(github) if p.endswith("/actions/runs")]) > 27
    await runtime.aclose()


async def test_a_failed_listing_keeps_the_last_list_and_is_retried_later(
    github_api_factory: Callable[..., LocalGitHubServer], redis_prefix: str, redis_url: str,
    aredis: aioredis.Redis,
) -> None:
    github = github_api_factory(static_tokens=[API_TOKEN])
    now = [1_000_000.0]
    settings = github_settings(redis_prefix, github.url, redis_url=redis_url,
                               pool={"repositories": [], "organizations": ["acme", "ghost"],
                                     "runner_scope": "acme"})
    runtime = GitHubRuntime(settings, aredis, Metrics(), clock=lambda: now[0])
    real = github.state.list_org_repositories
    failing = {"ghost": Problem(404, "Not Found")}  # a user's login: /orgs/ghost/repos is 404

    def listing(org: str) -> list[dict[str, Any]]:
        if org in failing:
            raise failing[org]
        return real(org)

    github.state.list_org_repositories = listing  # type: ignore[method-assign]
    queue_job(github)
    assert await runtime.resync() == 1
    now[0] += LIST_TTL_S + 1
    github.state.queue_job("acme/api", ("self-hosted", "fly"))
    failing["acme"] = Problem(502, "Server Error")
    with capture_logs() as logs:
        assert await runtime.resync() == 1  # acme/api still listed from the last list
    failures = [e for e in logs if e["event"].startswith("github repositories not listed")]
    assert sorted(e["organization"] for e in failures) == ["acme", "ghost"]
    assert API_TOKEN not in str(failures)
    now[0] += 60  # a failure is tried again after a minute; a 404 only after the TTL
    await runtime.resync()
    assert (paths(github).count("/orgs/acme/repos"), paths(github).count("/orgs/ghost/repos")) \
        == (3, 2)
    await runtime.aclose()


async def test_an_org_repositorys_job_no_longer_queued_is_dropped_after_asking_github(
    github_api_factory: Callable[..., LocalGitHubServer], redis_prefix: str, redis_url: str,
    aredis: aioredis.Redis,
) -> None:
    github = github_api_factory(static_tokens=[API_TOKEN])
    now = [1_000_000.0]
    settings = github_settings(redis_prefix, github.url, redis_url=redis_url, pool=ORG_ONLY)
    runtime = GitHubRuntime(settings, aredis, Metrics(), clock=lambda: now[0])
    gone = queue_job(github)
    first = github.state.queue_job(REPO, LABELS)
    assert await runtime.resync() == 2
    # A job queued behind `needs:` once `first` started (known from its webhook): its run is
    # in progress, so the listing of queued runs does not show it.
    later = github.state.queue_job(REPO, LABELS, run_id=first["run_id"])
    await runtime.ledger.queue("gh", QUEUE, JobRef(later["id"], first["run_id"], REPO, LABELS))
    runner = github.state.register_runner(("org", "acme"), "r1", list(LABELS))
    github.state.start_job(first["id"], runner["runner"]["id"])  # its webhook lost
    github.state.complete_job(gone, "cancelled")  # and this one's
    now[0] += 30.0  # too recent to trust a listing's absence: nothing asked
    before = len(github.state.requests)
    await runtime.resync()
    assert not [p for p in paths(github)[before:] if "/actions/jobs/" in p]
    now[0] += 120.0
    before = len(github.state.requests)
    await runtime.resync()
    asked = sorted(p for p in paths(github)[before:] if "/actions/jobs/" in p)
    assert asked == sorted(f"/repos/{REPO}/actions/jobs/{j}"
                           for j in (gone, first["id"], later["id"]))
    assert await runtime.ledger.queued_counts(["gh"]) == {"gh": 1}  # `later`, still queued
    await runtime.aclose()
