"""GitHub's rate limits: the client waits as GitHub asks (retry-after, the reset of a spent
budget, a minute and more for a secondary limit that says nothing), never sends while held back,
gives up with RateLimited rather than block for long, and exposes the remaining budget."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from scaler.github.auth import TokenAuth
from scaler.github.client import GitHubClient
from scaler.github.errors import GitHubAPIError, RateLimited
from scaler.github.local import ForcedLimit
from scaler.github.local_server import LocalGitHubServer
from scaler.github.models import Scope
from scaler.github.ratelimit import (
    RESET_SLACK_S,
    SECONDARY_MAX_WAIT_S,
    SECONDARY_MIN_WAIT_S,
    RateGate,
)
from scaler.github.testing import FakeClock
from scaler.secret import Secret

pytest_plugins = ["scaler.github.pytest_plugin"]

REPO = Scope.repo("acme/app")
TOKEN = "github_pat_ratelimit_tests"
NOW = 1_750_000_000.0


@pytest.fixture
def server(
    github_api_factory: Callable[..., LocalGitHubServer], github_clock: FakeClock
) -> LocalGitHubServer:
    return github_api_factory(clock=github_clock, static_tokens=[TOKEN])


def client(server: LocalGitHubServer, clock: FakeClock, **options: float) -> GitHubClient:
    return GitHubClient(TokenAuth(Secret(TOKEN)), api_url=server.url, clock=clock,
                        sleep=clock.sleep, **options)  # type: ignore[arg-type]


def sent(server: LocalGitHubServer) -> int:
    return len(server.state.requests)


async def test_a_429_with_retry_after_waits_that_long_then_succeeds(
    server: LocalGitHubServer, github_clock: FakeClock
) -> None:
    server.state.force_limit(ForcedLimit("secondary", status=429, retry_after=30))
    async with client(server, github_clock) as gh:
        await gh.list_runners(REPO)
    assert github_clock.sleeps == [30]
    assert sent(server) == 2  # the refused call and the one after the wait, nothing between


async def test_a_secondary_limit_403_without_headers_waits_a_minute_then_longer(
    server: LocalGitHubServer, github_clock: FakeClock
) -> None:
    server.state.force_limit(ForcedLimit("secondary", status=403), count=2)
    async with client(server, github_clock) as gh:
        await gh.list_runners(REPO)
    assert github_clock.sleeps == [SECONDARY_MIN_WAIT_S, 2 * SECONDARY_MIN_WAIT_S]
    assert sent(server) == 3


async def test_a_spent_primary_budget_waits_for_its_reset(
    server: LocalGitHubServer, github_clock: FakeClock
) -> None:
    server.state.force_limit(ForcedLimit("primary", status=403, reset_in=90))
    async with client(server, github_clock) as gh:
        await gh.list_runners(REPO)
    assert github_clock.sleeps == [int(NOW) + 90 + RESET_SLACK_S - NOW]


async def test_a_budget_reported_spent_holds_the_next_call_before_sending(
    github_api_factory: Callable[..., LocalGitHubServer], github_clock: FakeClock
) -> None:
    server = github_api_factory(clock=github_clock, static_tokens=[TOKEN], rate_limit=3)
    async with client(server, github_clock, max_wait_s=7200) as gh:
        for _ in range(3):
            await gh.list_runners(REPO)
        assert gh.budget is not None and gh.budget.remaining == 0
        assert github_clock.sleeps == []
        await gh.list_runners(REPO)
        # it waited for the reset without first sending a call bound to be refused
        assert github_clock.sleeps == [pytest.approx(3600 + RESET_SLACK_S, abs=1)]
        assert sent(server) == 4
        assert gh.budget.remaining == 2


async def test_a_wait_longer_than_max_wait_raises_and_later_calls_send_nothing(
    server: LocalGitHubServer, github_clock: FakeClock
) -> None:
    server.state.force_limit(ForcedLimit("primary", status=429, reset_in=1800))
    async with client(server, github_clock, max_wait_s=120) as gh:
        with pytest.raises(RateLimited) as caught:
            await gh.list_runners(REPO)
        assert caught.value.retry_at == int(NOW) + 1800 + RESET_SLACK_S
        assert caught.value.status_code == 429
        assert gh.ready_at() == caught.value.retry_at
        with pytest.raises(RateLimited):
            await gh.generate_jitconfig(REPO, "r", ["fly"])
        assert sent(server) == 1  # the held-back calls never left
        assert github_clock.sleeps == []
        github_clock.advance(1801)
        await gh.list_runners(REPO)
    assert sent(server) == 2


async def test_refusals_in_a_row_end_in_rate_limited(
    server: LocalGitHubServer, github_clock: FakeClock
) -> None:
    server.state.force_limit(ForcedLimit("secondary", status=403, retry_after=5), count=10)
    async with client(server, github_clock, max_rate_retries=3) as gh:
        with pytest.raises(RateLimited) as caught:
            await gh.list_runners(REPO)
    assert caught.value.status_code == 403
    assert "secondary rate limit" in str(caught.value)
    assert sent(server) == 4 and github_clock.sleeps == [5, 5, 5]


async def test_the_remaining_budget_is_exposed(
    server: LocalGitHubServer, github_clock: FakeClock
) -> None:
    async with client(server, github_clock) as gh:
        assert gh.budget is None
        await gh.list_runners(REPO)
        await gh.list_runners(REPO)
        budget = gh.budget
    assert budget is not None
    assert (budget.resource, budget.limit, budget.remaining, budget.used) == ("core", 5000,
                                                                               4998, 2)
    assert budget.reset_at == int(NOW) + 3600


async def test_a_permission_403_is_an_error_at_once_not_a_wait() -> None:
    # A rate limit is distinguishable from a permission refusal only by its markers, which a
    # faithful stand-in always sends: this answer needs a transport.
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(403, json={"message": "Resource not accessible by integration"},
                              headers={"x-ratelimit-remaining": "4000",
                                       "x-ratelimit-limit": "5000",
                                       "x-ratelimit-reset": str(int(NOW) + 600)})

    clock = FakeClock(NOW)
    async with GitHubClient(TokenAuth(Secret(TOKEN)), clock=clock, sleep=clock.sleep,
                            transport=httpx.MockTransport(answer)) as gh:
        with pytest.raises(GitHubAPIError) as caught:
            await gh.list_runners(REPO)
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.status_code == 403 and calls == 1 and clock.sleeps == []


# -- the gate alone -----------------------------------------------------------------------------


def headers(**values: str | int) -> httpx.Headers:
    return httpx.Headers({k.replace("_", "-"): str(v) for k, v in values.items()})


def test_a_403_without_markers_is_not_a_refusal() -> None:
    gate = RateGate()
    assert gate.observe(403, headers(), "Must have admin rights to Repository.", NOW) is None
    assert gate.ready_at(NOW) <= NOW


@pytest.mark.parametrize(
    ("status", "given", "message", "until"),
    [
        (429, headers(retry_after=7), None, NOW + 7),
        (403, headers(retry_after=0), None, NOW),
        (403, headers(x_ratelimit_remaining=0, x_ratelimit_limit=60,
                      x_ratelimit_reset=int(NOW) + 50), "API rate limit exceeded",
         int(NOW) + 50 + RESET_SLACK_S),
        (403, headers(), "You have exceeded a secondary rate limit.", NOW + 60),
        (429, headers(), None, NOW + 60),
    ],
)
def test_how_long_each_refusal_holds(
    status: int, given: httpx.Headers, message: str | None, until: float
) -> None:
    refusal = RateGate().observe(status, given, message, NOW)
    assert refusal is not None and refusal.until == until


def test_secondary_waits_double_up_to_a_cap_and_reset_after_a_success() -> None:
    gate, waits = RateGate(), []
    for _ in range(6):
        refusal = gate.observe(429, headers(), None, NOW)
        assert refusal is not None
        waits.append(refusal.until - NOW)
    assert waits == [60, 120, 240, 480, SECONDARY_MAX_WAIT_S, SECONDARY_MAX_WAIT_S]
    assert gate.observe(200, headers(), None, NOW + 2000) is None
    refusal = gate.observe(429, headers(), None, NOW + 2000)
    assert refusal is not None and refusal.until == NOW + 2000 + 60


def test_budgets_are_kept_per_resource() -> None:
    gate = RateGate()
    gate.observe(200, headers(x_ratelimit_limit=30, x_ratelimit_remaining=0,
                              x_ratelimit_reset=int(NOW) + 60, x_ratelimit_resource="search"),
                 None, NOW)
    assert gate.budget is None  # only core holds calls back before sending
    assert gate.ready_at(NOW) <= NOW
    assert gate.budgets()["search"].remaining == 0
