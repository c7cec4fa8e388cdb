"""The local GitHub stand-in behaves like GitHub where the scaler can tell: signed ``workflow_job``
webhooks over real HTTP (dropped and redelivered on demand), queued jobs given to any idle runner
whose labels match, a job not picked up within 60 s re-queued; and the stand-in runner command
takes one job with nothing but its JIT config."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaler.github.events import WorkflowJobEvent, read_delivery
from scaler.github.local_runner import ENV_VAR, JitConfigError, read_jit_config
from scaler.github.local_server import LocalGitHubServer
from scaler.github.signature import SignatureError
from scaler.github.testing import FakeClock
from scaler.secret import Secret

pytest_plugins = ["scaler.github.pytest_plugin"]

ROOT = Path(__file__).resolve().parent.parent
SECRET = Secret("local-webhook-secret")
REPO = "octo-org/octo-repo"
LABELS = ["self-hosted", "linux", "fly"]


class Receiver:
    """A webhook receiver over real HTTP: keeps each request's headers and raw body."""

    def __init__(self, status: int = 200) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.arrived:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    outer.arrived.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/github"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[WorkflowJobEvent]:
        out = []
        for headers, body in self.got:
            read = read_delivery(SECRET, headers, body)
            assert isinstance(read, WorkflowJobEvent)
            out.append(read)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def github(github_api_factory: Callable[..., LocalGitHubServer], receiver: Receiver,
           clock: FakeClock) -> LocalGitHubServer:
    return github_api_factory(clock=clock, static_tokens=["github_pat_local"],
                              webhook_url=receiver.url, webhook_secret=SECRET)


def jit(github: LocalGitHubServer, name: str, labels: list[str] = LABELS) -> str:
    answer = httpx.post(f"{github.url}/repos/{REPO}/actions/runners/generate-jitconfig",
                        headers={"Authorization": "Bearer github_pat_local"},
                        json={"name": name, "runner_group_id": 1, "labels": labels})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["encoded_jit_config"])


def runner_http(github: LocalGitHubServer, encoded: str) -> httpx.Client:
    config = read_jit_config(encoded)
    assert config.server_url == github.root
    return httpx.Client(base_url=config.server_url,
                        headers={"Authorization": f"Bearer {config.token}"})


def test_a_job_change_is_a_signed_workflow_job_delivery(
    github: LocalGitHubServer, receiver: Receiver
) -> None:
    job = github.state.queue_job(REPO, LABELS)
    assert github.hooks.wait_idle()
    [(headers, body)] = receiver.got
    assert headers["x-github-event"] == "workflow_job"
    assert headers["content-type"] == "application/json"
    assert len(headers["x-github-delivery"]) == 36
    [event] = receiver.events()
    assert (event.action, event.job_id, event.repository, event.labels) == (
        "queued", job["id"], REPO, tuple(LABELS))
    with pytest.raises(SignatureError):
        read_delivery(Secret("another secret"), headers, body)
    assert github.hooks.deliveries[0].status == 200


def test_a_dropped_delivery_is_recorded_not_sent_and_can_be_redelivered(
    github: LocalGitHubServer, receiver: Receiver
) -> None:
    github.hooks.drop(1, action="queued")
    lost = github.state.queue_job(REPO, LABELS)
    kept = github.state.queue_job(REPO, LABELS)
    assert github.hooks.wait_idle()
    assert [e.job_id for e in receiver.events()] == [kept["id"]]
    [dropped] = github.hooks.of_job(lost["id"])
    assert dropped.dropped and dropped.status is None
    answer = httpx.post(f"{github.root}/_local/webhooks/{dropped.guid}/redeliver")
    assert answer.status_code == 202
    assert github.hooks.wait_idle()
    assert [e.job_id for e in receiver.events()] == [kept["id"], lost["id"]]
    # a redelivery carries the same GUID, as GitHub's does
    assert receiver.got[-1][0]["x-github-delivery"] == dropped.guid


def test_a_queued_job_goes_to_any_idle_runner_whose_labels_match(
    github: LocalGitHubServer, receiver: Receiver
) -> None:
    first, second = jit(github, "fly-a"), jit(github, "fly-b")
    other = jit(github, "gpu", labels=["self-hosted", "gpu"])
    with runner_http(github, first) as a, runner_http(github, second) as b, \
            runner_http(github, other) as gpu:
        for client in (a, b, gpu):
            assert client.post("/_runner/session").status_code == 200
        # B was launched "for" this job, but A has waited longest: GitHub gives it to A
        job = github.state.queue_job(REPO, LABELS)
        assert gpu.get("/_runner/job").status_code == 204
        assert b.get("/_runner/job").status_code == 204
        got = a.get("/_runner/job")
        assert got.status_code == 200 and got.json()["id"] == job["id"]
        assert a.post(f"/_runner/jobs/{job['id']}/started").status_code == 204
        assert b.post(f"/_runner/jobs/{job['id']}/started").status_code == 409
        assert a.post(f"/_runner/jobs/{job['id']}/completed",
                      json={"conclusion": "failure"}).status_code == 204
        # the ephemeral runner is gone from GitHub; the other two remain, idle
        assert {r["name"] for r in github.state.all_runners()} == {"fly-b", "gpu"}
        assert a.get("/_runner/job").status_code == 401
    assert github.hooks.wait_idle()
    events = [e for e in receiver.events() if e.job_id == job["id"]]
    assert [e.action for e in events] == ["queued", "in_progress", "completed"]
    assert events[1].runner_name == "fly-a" and events[2].conclusion == "failure"


def test_a_job_not_picked_up_within_60s_is_requeued_for_another_runner(
    github: LocalGitHubServer, clock: FakeClock
) -> None:
    first, second = jit(github, "fly-a"), jit(github, "fly-b")
    with runner_http(github, first) as a, runner_http(github, second) as b:
        assert a.post("/_runner/session").status_code == 200
        job = github.state.queue_job(REPO, LABELS)
        assert b.post("/_runner/session").status_code == 200
        assert b.get("/_runner/job").status_code == 204  # given to A, which never starts it
        clock.advance(59)
        assert b.get("/_runner/job").status_code == 204
        clock.advance(1)
        got = b.get("/_runner/job")
        assert got.status_code == 200 and got.json()["id"] == job["id"]
        assert github.broker.requeued == [(job["id"], read_jit_config(first).runner_id)]
        assert github.state.all_runners()[0]["status"] == "offline"  # A lost its session


def test_cancelling_a_queued_job_completes_it_as_cancelled(
    github: LocalGitHubServer, receiver: Receiver
) -> None:
    job = github.state.queue_job(REPO, LABELS)
    assert httpx.post(f"{github.root}/_local/jobs/{job['id']}/cancel").status_code == 204
    assert github.hooks.wait_idle()
    assert [(e.action, e.conclusion) for e in receiver.events()] == [
        ("queued", None), ("completed", "cancelled")]


def runner_env(encoded: str | None) -> dict[str, str]:
    """Only what a machine's interpreter needs, and the JIT config: no other secret exists."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    if encoded is not None:
        env[ENV_VAR] = encoded
    return env


def test_the_runner_command_takes_one_job_with_only_its_jit_config(
    github: LocalGitHubServer, receiver: Receiver
) -> None:
    job = github.state.queue_job(REPO, LABELS)
    encoded = jit(github, "fly-runner-1")
    done = subprocess.run(
        [sys.executable, "-m", "scaler.github.local_runner", "--run-time", "0",
         "--conclusion", "success", "--max-wait", "20"],
        env=runner_env(encoded), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"completed job {job['id']}: success" in done.stdout
    output = done.stdout + done.stderr
    assert encoded not in output and read_jit_config(encoded).token not in output
    assert github.state.jobs[job["id"]]["conclusion"] == "success"
    assert github.state.all_runners() == []  # ephemeral: deregistered with its job
    assert github.hooks.wait_idle()
    assert [e.action for e in receiver.events()] == ["queued", "in_progress", "completed"]


def test_the_runner_command_without_a_jit_config_says_so() -> None:
    done = subprocess.run([sys.executable, "-m", "scaler.github.local_runner"],
                          env=runner_env(None), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{ENV_VAR} is not set" in done.stdout
    with pytest.raises(JitConfigError, match="not a JIT config"):
        read_jit_config("abc123")


def test_a_runner_removed_before_it_got_a_job_exits(github: LocalGitHubServer) -> None:
    encoded = jit(github, "fly-idle")
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler.github.local_runner", "--max-wait", "30"],
        env=runner_env(encoded), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert "online, waiting for a job" in process.stdout.readline()
        runner_id = read_jit_config(encoded).runner_id
        github.state.remove_runner(("repo", REPO), runner_id)
        assert process.wait(timeout=30) == 2
        assert "deregistered before it got a job" in process.stdout.read()
    finally:
        process.kill()
        process.wait()
