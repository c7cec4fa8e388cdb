"""The local GitHub stand-in over real HTTP: answers shaped as GitHub's documented examples, the
App JWT checked against the test's public key, requests validated, the admin side."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from scaler.github.events import WorkflowJobEvent, parse_delivery
from scaler.github.local_server import LocalGitHubServer
from scaler.github.routing import Routed, RunnerPoolRule, route
from scaler.github.testing import AppKey, FakeClock, make_app_key

pytest_plugins = ["scaler.github.pytest_plugin"]

DATA = Path(__file__).parent / "data/github"
NOW = 1_750_000_000


def documented(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def shape(value: Any) -> Any:
    """The keys of every object, recursively (the first item stands for a list)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


def app_jwt(key: AppKey, iat: int = NOW - 60, exp: int = NOW + 540, iss: str = "1") -> str:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private = load_pem_private_key(key.private_pem.get_secret_value().encode(), None)
    return jwt.encode({"iat": iat, "exp": exp, "iss": iss}, private,  # type: ignore[arg-type]
                      algorithm="RS256")


@pytest.fixture
def server(
    github_api_factory: Callable[..., LocalGitHubServer], github_clock: FakeClock
) -> LocalGitHubServer:
    github_clock.now = NOW
    return github_api_factory(clock=github_clock, static_tokens=["github_pat_local"])


@pytest.fixture
def http(server: LocalGitHubServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url,
                      headers={"Authorization": "Bearer github_pat_local"}) as client:
        yield client


def test_generate_jitconfig_answers_as_documented(http: httpx.Client) -> None:
    request = documented("generate-jitconfig.request.json")
    answer = http.post("/repos/octo-org/octo-repo/actions/runners/generate-jitconfig",
                       json=request)
    assert answer.status_code == 201
    body = answer.json()
    expected = documented("generate-jitconfig.response.json")
    assert shape(body) == shape(expected)
    runner = body["runner"]
    assert (runner["name"], runner["os"], runner["status"], runner["busy"]) == (
        "New runner", "unknown", "offline", False)
    # default labels are read-only, the rest custom, as in the documented answer
    assert [(label["name"], label["type"]) for label in runner["labels"]] == [
        (label["name"], label["type"]) for label in expected["runner"]["labels"]]
    assert body["encoded_jit_config"] and body["encoded_jit_config"] != "abc123"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"labels": []}, 422),
        ({"labels": "self-hosted"}, 422),
        ({"name": None}, 422),
        ({"runner_group_id": "1"}, 422),
        ({"work_folder": 3}, 422),
    ],
)
def test_a_bad_jitconfig_request_is_refused(
    http: httpx.Client, change: dict[str, Any], status: int
) -> None:
    body = {**documented("generate-jitconfig.request.json"), **change}
    answer = http.post("/orgs/octo-org/actions/runners/generate-jitconfig", json=body)
    assert answer.status_code == status
    assert set(answer.json()) >= {"message", "documentation_url"}


def test_every_call_carries_the_rate_limit_headers(http: httpx.Client) -> None:
    first = http.get("/repos/acme/app/actions/runners")
    second = http.get("/repos/acme/app/actions/runs", params={"status": "queued"})
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-remaining"] == "4999"
    assert second.headers["x-ratelimit-remaining"] == "4998"
    assert second.headers["x-ratelimit-used"] == "2"
    assert second.headers["x-ratelimit-reset"] == str(NOW + 3600)
    assert second.headers["x-ratelimit-resource"] == "core"


def test_jobs_and_runs_are_listed_with_pages(
    server: LocalGitHubServer, http: httpx.Client
) -> None:
    jobs = [server.state.queue_job("acme/app", ["fly"], name=f"j{i}") for i in range(3)]
    page = http.get("/repos/acme/app/actions/runs", params={"status": "queued", "per_page": 2})
    assert page.json()["total_count"] == 3 and len(page.json()["workflow_runs"]) == 2
    assert 'rel="next"' in page.headers["link"] and 'rel="last"' in page.headers["link"]
    rest = http.get(page.links["next"]["url"])
    assert len(rest.json()["workflow_runs"]) == 1 and "link" not in rest.headers
    listed = http.get(f"/repos/acme/app/actions/runs/{jobs[0]['run_id']}/jobs").json()
    assert listed["total_count"] == 1 and listed["jobs"][0]["id"] == jobs[0]["id"]
    assert http.get(f"/repos/acme/other/actions/runs/{jobs[0]['run_id']}/jobs").status_code \
        == 404


def test_a_job_has_the_documented_workflow_job_shape(server: LocalGitHubServer) -> None:
    job = server.state.queue_job("acme/app", ["self-hosted", "fly"])
    example = documented("queued.payload.json")
    assert set(job) == set(example["workflow_job"])
    payload = server.state.webhook_payload(job["id"], "queued")
    assert set(payload) == set(example)  # action, workflow_job, repository, sender, installation
    assert set(payload["repository"]) <= set(example["repository"])
    assert set(payload["repository"]["owner"]) <= set(example["repository"]["owner"])


def test_a_webhook_payload_is_read_and_routed(server: LocalGitHubServer) -> None:
    job = server.state.queue_job("acme/app", ["self-hosted", "fly"])
    body = json.dumps(server.state.webhook_payload(job["id"], "queued")).encode()
    event = parse_delivery({"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-9"}, body)
    assert isinstance(event, WorkflowJobEvent)
    assert (event.job_id, event.run_id, event.labels) == (job["id"], job["run_id"],
                                                          ("self-hosted", "fly"))
    assert (event.repository, event.organization, event.installation_id) == ("acme/app", "acme",
                                                                             1)
    rule = RunnerPoolRule("fly", ["fly"], organizations=["acme"])
    assert route(event, [rule]) == Routed(rule)


def test_an_installation_token_needs_a_valid_app_jwt(
    server: LocalGitHubServer, github_app_key: AppKey
) -> None:
    path = f"{server.url}/app/installations/1/access_tokens"

    def post(token: str, installation: int = 1) -> httpx.Response:
        return httpx.post(path.replace("/1/", f"/{installation}/"),
                          headers={"Authorization": f"Bearer {token}"})

    answer = post(app_jwt(github_app_key))
    assert answer.status_code == 201
    assert set(answer.json()) >= {"token", "expires_at", "permissions", "repository_selection"}
    assert answer.json()["expires_at"] == "2025-06-15T16:06:40Z"  # NOW + 1 h
    assert post(app_jwt(make_app_key())).status_code == 401  # another key
    assert post(app_jwt(github_app_key, iss="2")).status_code == 401  # another App
    assert post(app_jwt(github_app_key, exp=NOW - 1)).status_code == 401  # expired
    assert post(app_jwt(github_app_key, exp=NOW + 3600)).status_code == 401  # too far ahead
    assert post(app_jwt(github_app_key, iat=NOW + 300)).status_code == 401  # issued later
    assert post("not-a-jwt").status_code == 401
    assert post(app_jwt(github_app_key), installation=2).status_code == 404


def test_an_installation_token_lapses(
    server: LocalGitHubServer, github_app_key: AppKey, github_clock: FakeClock
) -> None:
    token = httpx.post(f"{server.url}/app/installations/1/access_tokens",
                       headers={"Authorization": f"Bearer {app_jwt(github_app_key)}"}
                       ).json()["token"]
    auth = {"Authorization": f"token {token}"}
    assert httpx.get(f"{server.url}/orgs/acme/actions/runners", headers=auth).status_code == 200
    github_clock.advance(3600)
    answer = httpx.get(f"{server.url}/orgs/acme/actions/runners", headers=auth)
    assert answer.status_code == 401 and answer.json()["message"] == "Bad credentials"
    assert httpx.get(f"{server.url}/orgs/acme/actions/runners").status_code == 401


def test_the_admin_side_queues_jobs_lists_runners_and_forces_limits(
    server: LocalGitHubServer, http: httpx.Client
) -> None:
    root = server.root
    job = httpx.post(f"{root}/_local/jobs",
                     json={"repository": "acme/app", "labels": ["fly"]}).json()
    queued = http.get("/repos/acme/app/actions/runs", params={"status": "queued"}).json()
    assert [r["id"] for r in queued["workflow_runs"]] == [job["run_id"]]
    http.post("/repos/acme/app/actions/runners/generate-jitconfig",
              json={"name": "r1", "runner_group_id": 1, "labels": ["fly"]})
    runners = httpx.get(f"{root}/_local/runners").json()["runners"]
    assert [(r["scope"], r["name"]) for r in runners] == [("repo:acme/app", "r1")]
    forced = {"kind": "secondary", "status": 429, "retry_after": 12, "count": 2}
    assert httpx.post(f"{root}/_local/rate-limits", json=forced).status_code == 204
    for _ in range(2):
        refused = http.get("/repos/acme/app/actions/runners")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "12"
        assert "secondary rate limit" in refused.json()["message"]
    assert http.get("/repos/acme/app/actions/runners").status_code == 200
    requests = httpx.get(f"{root}/_local/requests").json()
    assert requests[-1] == ["GET", "/repos/acme/app/actions/runners", "token"]


def test_a_forced_primary_limit_spends_the_budget(
    server: LocalGitHubServer, http: httpx.Client, github_clock: FakeClock
) -> None:
    httpx.post(f"{server.root}/_local/rate-limits",
               json={"kind": "primary", "status": 403, "reset_in": 30})
    refused = http.get("/repos/acme/app/actions/runners")
    assert refused.status_code == 403
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["x-ratelimit-reset"] == str(NOW + 30)
    assert http.get("/repos/acme/app/actions/runners").status_code == 403  # still spent
    github_clock.advance(30)
    assert http.get("/repos/acme/app/actions/runners").status_code == 200
