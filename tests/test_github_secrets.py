"""Secrets of the GitHub pieces (the App private key, JWTs, installation tokens, JIT configs, the
webhook secret) never reach logs, errors or reprs: canaries through every path that logs or
raises."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from scaler.github.auth import AppAuth, TokenAuth
from scaler.github.client import GitHubClient
from scaler.github.errors import GitHubAPIError, GitHubError
from scaler.github.events import MalformedDelivery, read_delivery
from scaler.github.local import ForcedLimit
from scaler.github.local_server import LocalGitHubServer
from scaler.github.models import Scope
from scaler.github.signature import SignatureError
from scaler.github.testing import AppKey, FakeClock
from scaler.secret import Secret

pytest_plugins = ["scaler.github.pytest_plugin"]

REPO = Scope.repo("acme/app")


def pem_body(key: AppKey) -> list[str]:
    """Lines of the key's base64 body: any of them in a log would leak part of the key."""
    return [line for line in key.private_pem.get_secret_value().splitlines()
            if line and not line.startswith("-----")]


async def test_no_secret_of_a_whole_session_reaches_logs_reprs_or_errors(
    github_api_factory: Callable[..., LocalGitHubServer], github_app_key: AppKey,
    github_clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    server = github_api_factory(clock=github_clock)
    server.state.queue_job("acme/app", ["self-hosted", "fly"])
    texts: list[str] = []
    async with GitHubClient(AppAuth("1", github_app_key.private_pem, 1), api_url=server.url,
                            clock=github_clock, sleep=github_clock.sleep) as gh:
        jit = await gh.generate_jitconfig(REPO, "runner-1", ["self-hosted", "fly"])
        texts += [repr(jit), str(jit), repr(gh), str(gh), repr(gh.budget)]
        await gh.list_queued_jobs("acme/app")
        server.state.force_limit(ForcedLimit("secondary", status=429, retry_after=3))
        await gh.list_runners(REPO)
        for attempt in (gh.generate_jitconfig(REPO, "runner-1", ["fly"]),  # 409
                        gh.remove_runner(Scope.repo("acme/nothing"), 12345)):
            try:
                await attempt
            except GitHubError as exc:
                texts += [str(exc), repr(exc)]
        server.state.tokens.clear()  # revoked: the client fetches a new token
        await gh.remove_runner(REPO, jit.runner_id)
    assert len(texts) > 5 and github_clock.sleeps == [3]
    canaries = [
        jit.encoded_jit_config.get_secret_value(),
        server.state.jit_configs[jit.runner_id],
        *server.state.tokens,
        *pem_body(github_app_key),
    ]
    assert len(server.state.tokens) == 1 and all(len(c) > 20 for c in canaries)
    everything = "\n".join([caplog.text, *texts,
                            *(repr(r.args) for r in caplog.records)])
    assert "rate limit" in caplog.text  # the wait was logged, without a secret
    for canary in canaries:
        assert canary not in everything


async def test_an_unexpected_success_body_is_reported_by_field_not_by_value() -> None:
    # GitHub never answers this; a faithful stand-in cannot, so a transport plays the server.
    canary = "JITCANARY" + "x" * 40

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"encoded_jit_config": canary, "runner": {"id": "nan"}})

    async with GitHubClient(TokenAuth(Secret("t0ken-canary-value")),
                            transport=httpx.MockTransport(answer)) as gh:
        with pytest.raises(GitHubAPIError) as caught:
            await gh.generate_jitconfig(REPO, "r", ["fly"])
    text = f"{caught.value} {caught.value!r}"
    assert "runner.id" in text
    assert canary not in text and "t0ken-canary-value" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_bad_private_key_is_named_without_its_content() -> None:
    canary = "KEYCANARYKEYCANARYKEYCANARY"
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{canary}\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(ValueError) as caught:
        AppAuth("1", Secret(pem), 1)
    assert "PEM private key" in str(caught.value)
    assert canary not in f"{caught.value} {caught.value!r}"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_auth_reprs_hide_keys_and_tokens(github_app_key: AppKey) -> None:
    auth = AppAuth(123, github_app_key.private_pem, 9)
    token = TokenAuth(Secret("github_pat_CANARY_0123456789"))
    text = f"{auth!r} {auth} {token!r} {token}"
    assert "CANARY" not in text
    assert not any(line in text for line in pem_body(github_app_key))
    assert "app_id='123'" in text and "installation_id=9" in text
    jwt = auth.jwt(1_750_000_000)
    assert jwt.get_secret_value() not in f"{jwt!r} {jwt}"


def test_the_webhook_secret_never_shows_in_delivery_errors() -> None:
    secret = Secret("WEBHOOKCANARY-secret-value")
    headers = {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-1",
               "X-Hub-Signature-256": "sha256=" + "0" * 64}
    for body in (b"{}", b"not json"):
        with pytest.raises((SignatureError, MalformedDelivery)) as caught:
            read_delivery(secret, headers, body)
        assert "WEBHOOKCANARY" not in f"{caught.value} {caught.value!r}"
