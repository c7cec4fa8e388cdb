"""The GitHub client against the local stand-in over real HTTP: JIT configs, queued jobs, runner
removal, repository listings (an installation's, an organization's), App auth (JWT -> cached
installation token, refreshed before expiry), fine-grained tokens, GitHub Enterprise Server's
/api/v3."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from scaler.github.auth import TOKEN_REFRESH_MARGIN_S, AppAuth, TokenAuth
from scaler.github.client import GitHubClient
from scaler.github.errors import GitHubAPIError, GitHubTransportError
from scaler.github.local import ForcedLimit
from scaler.github.local_server import LocalGitHubServer
from scaler.github.models import Scope
from scaler.github.testing import AppKey, FakeClock, make_app_key
from scaler.secret import Secret

pytest_plugins = ["scaler.github.pytest_plugin"]

DATA = Path(__file__).parent / "data/github"
REPO = Scope.repo("acme/app")
LABELS = ["self-hosted", "fly"]


def app_client(server: LocalGitHubServer, key: AppKey, clock: FakeClock | None = None,
               **options: object) -> GitHubClient:
    timing = {"clock": clock, "sleep": clock.sleep} if clock else {}
    return GitHubClient(AppAuth("1", key.private_pem, 1), api_url=server.url,
                        **timing, **options)  # type: ignore[arg-type]


def token_requests(server: LocalGitHubServer) -> int:
    return sum(1 for _, path, _ in server.state.requests if path.endswith("/access_tokens"))


async def test_generate_jitconfig_registers_a_runner_in_a_repository(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    async with app_client(github_api, github_app_key) as gh:
        jit = await gh.generate_jitconfig(REPO, "fly-runner-1", LABELS, runner_group_id=1)
    (runner,) = github_api.state.all_runners()
    assert runner["scope"] == "repo:acme/app"
    assert (jit.runner_id, jit.runner_name, jit.labels) == (runner["id"], "fly-runner-1",
                                                           ("self-hosted", "fly"))
    assert jit.encoded_jit_config.get_secret_value() == github_api.state.jit_configs[jit.runner_id]
    documented = json.loads((DATA / "generate-jitconfig.request.json").read_text())
    (sent,) = github_api.state.jit_requests
    assert set(sent) == set(documented)  # name, runner_group_id, labels, work_folder
    assert sent == {"name": "fly-runner-1", "runner_group_id": 1, "labels": LABELS,
                    "work_folder": "_work"}


async def test_generate_jitconfig_in_an_organization(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    async with app_client(github_api, github_app_key) as gh:
        jit = await gh.generate_jitconfig(Scope.org("acme"), "org-runner", ["gpu"], 3)
        assert [r.name for r in await gh.list_runners(Scope.org("acme"))] == ["org-runner"]
        assert await gh.list_runners(REPO) == []
    assert github_api.state.jit_requests[0]["runner_group_id"] == 3
    assert jit.labels == ("gpu",)


async def test_a_runner_name_taken_in_the_scope_is_a_409(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    async with app_client(github_api, github_app_key) as gh:
        await gh.generate_jitconfig(REPO, "same", LABELS)
        with pytest.raises(GitHubAPIError) as caught:
            await gh.generate_jitconfig(REPO, "same", LABELS)
    assert caught.value.status_code == 409
    assert caught.value.operation == "generate_jitconfig"
    assert "already exists" in str(caught.value)
    assert len(github_api.state.all_runners()) == 1


async def test_remove_runner_is_true_once_then_false(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    async with app_client(github_api, github_app_key) as gh:
        jit = await gh.generate_jitconfig(REPO, "r", LABELS)
        assert await gh.remove_runner(REPO, jit.runner_id) is True
        assert github_api.state.all_runners() == []
        assert await gh.remove_runner(REPO, jit.runner_id) is False


async def test_a_busy_runner_is_not_removed(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    job = github_api.state.queue_job("acme/app", LABELS)
    async with app_client(github_api, github_app_key) as gh:
        jit = await gh.generate_jitconfig(REPO, "r", LABELS)
        github_api.state.start_job(job["id"], jit.runner_id)
        with pytest.raises(GitHubAPIError) as caught:
            await gh.remove_runner(REPO, jit.runner_id)
        assert caught.value.status_code == 422
        github_api.state.complete_job(job["id"])  # an ephemeral runner leaves with its job
        assert await gh.remove_runner(REPO, jit.runner_id) is False


async def test_list_queued_jobs_finds_queued_jobs_in_queued_and_started_runs(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    state = github_api.state
    lone = state.queue_job("acme/app", LABELS, name="lone")
    first = state.queue_job("acme/app", LABELS, name="first")
    later = state.queue_job("acme/app", ["self-hosted", "gpu"], name="later",
                            run_id=first["run_id"])
    fork_pr = state.queue_job("acme/app", LABELS, name="pr", event="pull_request",
                              head_repository="stranger/app")
    state.queue_job("acme/other", LABELS)  # another repository
    done = state.queue_job("acme/app", LABELS, name="done")
    async with app_client(github_api, github_app_key) as gh:
        runner = await gh.generate_jitconfig(REPO, "r", LABELS)
        state.start_job(first["id"], runner.runner_id)  # its run is in_progress now
        state.complete_job(done["id"])
        jobs = await gh.list_queued_jobs("acme/app")
        only_queued_runs = await gh.list_queued_jobs("acme/app", run_statuses=("queued",))
    by_id = {j.job_id: j for j in jobs}
    assert set(by_id) == {lone["id"], later["id"], fork_pr["id"]}
    assert by_id[later["id"]].labels == ("self-hosted", "gpu")
    assert by_id[later["id"]].run_id == first["run_id"]
    assert by_id[fork_pr["id"]].event == "pull_request"
    assert by_id[fork_pr["id"]].head_repository == "stranger/app"
    assert by_id[lone["id"]].head_repository == "acme/app"
    assert all(j.job_id > 2**32 for j in jobs)
    assert {j.job_id for j in only_queued_runs} == {lone["id"], fork_pr["id"]}


async def test_listings_follow_every_page(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    queued = {github_api.state.queue_job("acme/app", LABELS)["id"] for _ in range(130)}
    async with app_client(github_api, github_app_key) as gh:
        jobs = await gh.list_queued_jobs("acme/app", run_statuses=("queued",))
    assert {j.job_id for j in jobs} == queued
    run_listings = [p for _, p, _ in github_api.state.requests if p.endswith("/actions/runs")]
    assert len(run_listings) == 2  # 100 + 30, the second page by its Link header


async def test_a_link_to_another_host_is_not_followed() -> None:
    # GitHub never sends one; a stand-in faithful to GitHub cannot either.
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"total_count": 0, "runners": []}, headers={
            "link": '<https://evil.example/steal?page=2>; rel="next"'})

    async with GitHubClient(TokenAuth(Secret("t0ken-value")),
                            transport=httpx.MockTransport(answer)) as gh:
        assert await gh.list_runners(REPO) == []
    assert len(seen) == 1 and seen[0].startswith("https://api.github.com/repos/acme/app/")


async def test_the_installation_token_is_cached_and_refreshed_before_it_expires(
    github_api_factory: Callable[..., LocalGitHubServer], github_app_key: AppKey,
    github_clock: FakeClock,
) -> None:
    server = github_api_factory(clock=github_clock, token_ttl_s=3600)
    async with app_client(server, github_app_key, github_clock) as gh:
        for _ in range(5):
            await gh.list_runners(REPO)
        assert token_requests(server) == 1
        (first,) = server.state.tokens
        github_clock.advance(3600 - TOKEN_REFRESH_MARGIN_S - 1)  # still inside the margin
        await gh.list_runners(REPO)
        assert token_requests(server) == 1
        github_clock.advance(2)  # now within 5 minutes of expires_at: replaced before use
        await gh.list_runners(REPO)
        assert token_requests(server) == 2
        assert set(server.state.tokens) - {first}
        github_clock.advance(600)  # past the first token's expiry: the new one is used
        await gh.list_runners(REPO)
        assert token_requests(server) == 2
    assert github_clock.sleeps == []


async def test_concurrent_first_calls_fetch_one_token(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    async with app_client(github_api, github_app_key) as gh:
        await asyncio.gather(*(gh.list_runners(REPO) for _ in range(8)))
    assert token_requests(github_api) == 1
    assert len(github_api.state.requests) == 9


async def test_a_revoked_token_is_replaced_once(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    async with app_client(github_api, github_app_key) as gh:
        await gh.list_runners(REPO)
        github_api.state.tokens.clear()  # revoked on GitHub's side
        await gh.list_runners(REPO)
    assert token_requests(github_api) == 2


async def test_a_jwt_signed_with_another_key_is_refused(github_api: LocalGitHubServer) -> None:
    async with app_client(github_api, make_app_key()) as gh:
        with pytest.raises(GitHubAPIError) as caught:
            await gh.list_runners(REPO)
    assert caught.value.status_code == 401
    assert caught.value.operation == "create_installation_token"
    assert token_requests(github_api) == 1  # and nothing else was sent


async def test_an_unknown_installation_is_a_404(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    async with GitHubClient(AppAuth(1, github_app_key.private_pem, 99),
                            api_url=github_api.url) as gh:
        with pytest.raises(GitHubAPIError) as caught:
            await gh.list_runners(REPO)
    assert caught.value.status_code == 404


async def test_a_fine_grained_token_is_sent_as_it_is(
    github_api_factory: Callable[..., LocalGitHubServer],
) -> None:
    server = github_api_factory(static_tokens=["github_pat_local_1234"])
    async with GitHubClient(TokenAuth(Secret("github_pat_local_1234")), api_url=server.url) as gh:
        await gh.generate_jitconfig(REPO, "r", LABELS)
    async with GitHubClient(TokenAuth(Secret("github_pat_wrong")), api_url=server.url) as gh:
        with pytest.raises(GitHubAPIError) as caught:
            await gh.list_runners(REPO)
    assert caught.value.status_code == 401
    assert token_requests(server) == 0
    assert len(server.state.requests) == 2  # a refused token is not tried again


async def test_github_enterprise_server_api_root(
    github_api_factory: Callable[..., LocalGitHubServer], github_app_key: AppKey
) -> None:
    server = github_api_factory(path_prefix="/api/v3")
    assert server.url.endswith("/api/v3")
    for _ in range(101):
        server.state.queue_job("acme/app", LABELS)
    async with app_client(server, github_app_key) as gh:
        await gh.generate_jitconfig(REPO, "r", LABELS)
        assert len(await gh.list_queued_jobs("acme/app", run_statuses=("queued",))) == 101
    assert all(path.startswith("/api/v3/") for _, path, _ in server.state.requests)


async def test_no_answer_is_a_transport_error(github_app_key: AppKey) -> None:
    server = LocalGitHubServer(github_app_key.public)
    url = server.url
    server.close()
    async with GitHubClient(TokenAuth(Secret("t0ken-value")), api_url=url) as gh:
        with pytest.raises(GitHubTransportError) as caught:
            await gh.list_runners(REPO)
    assert caught.value.operation == "list_runners"


def test_bad_arguments_are_refused(github_app_key: AppKey) -> None:
    with pytest.raises(ValueError, match="api_url"):
        GitHubClient(TokenAuth(Secret("t")), api_url="api.github.com")
    with pytest.raises(ValueError, match="repository"):
        Scope.repo("no-slash")
    with pytest.raises(ValueError, match="organization"):
        Scope.org("a/b")
    with pytest.raises(ValueError, match="installation_id"):
        AppAuth("1", github_app_key.private_pem, 0)


async def test_installation_repositories_follow_every_page_and_wait_out_a_rate_limit(
    github_api_factory: Callable[..., LocalGitHubServer], github_app_key: AppKey,
    github_clock: FakeClock,
) -> None:
    names = [f"acme/repo-{i:03}" for i in range(130)] + ["other/tool"]
    server = github_api_factory(clock=github_clock, installation_repositories={1: names})
    async with app_client(server, github_app_key, github_clock) as gh:
        await gh.list_runners(Scope.org("acme"))  # the installation token, before the limit
        server.state.force_limit(ForcedLimit("secondary", status=429, retry_after=30))
        found = await gh.list_installation_repositories()
    assert [r.full_name for r in found] == sorted(names)
    assert {r.owner for r in found} == {"acme", "other"}
    assert not any(r.archived or r.disabled for r in found)
    assert github_clock.sleeps == [30]  # the refusal's retry-after, then the same page again
    listings = [p for _, p, _ in server.state.requests if p == "/installation/repositories"]
    assert len(listings) == 3  # refused, then 100 + 31 by the Link header


async def test_an_installation_reaches_every_known_repository_unless_given_some(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    github_api.state.queue_job("acme/app", LABELS)
    github_api.state.queue_job("umbrella/site", LABELS)
    async with app_client(github_api, github_app_key) as gh:
        found = await gh.list_installation_repositories()
    assert [(r.full_name, r.owner) for r in found] == [("acme/app", "acme"),
                                                       ("umbrella/site", "umbrella")]


async def test_org_repositories_are_paginated_and_of_that_organization_only(
    github_api_factory: Callable[..., LocalGitHubServer], github_clock: FakeClock,
) -> None:
    server = github_api_factory(clock=github_clock, static_tokens=["github_pat_org_1234"])
    for i in range(101):
        server.state.queue_job(f"acme/svc-{i:03}", LABELS)
    server.state.queue_job("other/tool", LABELS)
    server.state.force_limit(ForcedLimit("primary", status=403, reset_in=40))
    async with GitHubClient(TokenAuth(Secret("github_pat_org_1234")), api_url=server.url,
                            clock=github_clock, sleep=github_clock.sleep) as gh:
        found = await gh.list_org_repositories("acme")
        assert await gh.list_org_repositories("nobody") == []
        with pytest.raises(GitHubAPIError) as caught:
            await gh.list_installation_repositories()  # a token has no installation
        with pytest.raises(ValueError, match="organization"):
            await gh.list_org_repositories("acme/svc-000")
    assert len(found) == 101 and {r.owner for r in found} == {"acme"}
    assert caught.value.status_code == 403
    assert len(github_clock.sleeps) == 1 and github_clock.sleeps[0] >= 40  # the budget's reset
    listings = [p for _, p, _ in server.state.requests if p == "/orgs/acme/repos"]
    assert len(listings) == 3  # refused, then 100 + 1


async def test_get_job_status_follows_the_job_and_is_none_elsewhere(
    github_api: LocalGitHubServer, github_app_key: AppKey
) -> None:
    job = github_api.state.queue_job("acme/app", LABELS)
    async with app_client(github_api, github_app_key) as gh:
        assert await gh.get_job_status("acme/app", job["id"]) == "queued"
        github_api.state.complete_job(job["id"], "cancelled")
        assert await gh.get_job_status("acme/app", job["id"]) == "completed"
        assert await gh.get_job_status("acme/other", job["id"]) is None
