"""``scaler dev --github``: the local GitHub stand-in queues workflow jobs and webhooks them (one
lost on purpose) to a real scaler with a github pool; the run proves every job got exactly one
runner machine, the resync found the lost one, no machine got a secret besides its JIT config,
and nothing is left. The proof's own checks are tested to fail when they should."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from scaler.commands import dev as dev_command
from scaler.dev.config import DevIds
from scaler.dev.github import GitHubProof, GitHubRun
from scaler.dev.github_config import RUNNERS_POOL, github_dev_settings
from scaler.dev.session import DevOptions
from scaler.github.launcher import JITCONFIG_ENV
from scaler.github.local_server import LocalGitHubServer
from scaler.github.testing import AppKey
from scaler.local.server import LocalAPIServer
from scaler.secret import Secret

pytest_plugins = ["scaler.github.pytest_plugin"]
pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent


def _dev(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "scaler.cli", "dev", "--github", "--no-view",
                           *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_github_run_gives_each_job_one_runner_and_leaves_nothing(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    namespace = f"{redis_prefix}ghdev"
    done = _dev("--jobs", "4", "--exit-when-done", "--timeout", "120", "--run-time", "0.2",
                "--redis-url", redis_url, "--namespace", namespace, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "github: 4/4 jobs completed" in out
    assert "github: 4 runner machines, one job each" in out
    # At least the lost one: a resync that lists a job before its own (late) webhook arrives
    # counts that job too, so the exact number depends on timing.
    found = re.search(r"(\d+) job\(s\) found by resync after a lost webhook", out)
    assert found is not None and int(found.group(1)) >= 1, out
    assert "1 redelivery(ies) ignored" in out
    assert "left: 0 machines, 0 registered runners, 0 queued or claimed messages" in out
    assert out.rstrip().splitlines()[-2] == "github: PASS"
    assert list(redis_client.scan_iter(f"{namespace}:*")) == []


def test_github_run_that_cannot_finish_fails_and_says_why(
    redis_url: str, redis_prefix: str
) -> None:
    done = _dev("--jobs", "2", "--timeout", "0.3", "--redis-url", redis_url,
                "--namespace", f"{redis_prefix}ghfail", timeout=120)
    assert done.returncode == 1
    assert "github: FAIL: timed out after 0.3s waiting for jobs to complete" in done.stdout
    assert "logs kept in" in done.stderr


def test_github_needs_a_number_of_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--github needs --jobs N" in DevOptions(github=True).problems()[0]
    assert "--run-time" in DevOptions(github=True, jobs=1, run_time=-1).problems()[0]
    parser = argparse.ArgumentParser()
    dev_command.add_arguments(parser)
    args = parser.parse_args(["--github", "--no-view", "--namespace", "dev-ghopt"])
    assert (args.github, args.run_time) == (True, 0.5)
    assert dev_command.run(args) == 2
    assert "--github needs --jobs N" in capsys.readouterr().err


def test_the_proof_fails_on_each_broken_promise() -> None:
    good = GitHubProof(jobs=3, completed=3, machines=3, one_job_each=True, resynced=1)
    assert good.problems == [] and good.format().endswith("github: PASS")
    broken = {
        "completed": GitHubProof(3, completed=2, machines=3, one_job_each=True, resynced=1),
        "exactly one machine": GitHubProof(3, completed=3, machines=4, one_job_each=True,
                                           resynced=1),
        "each machine one job": GitHubProof(3, completed=3, machines=3, one_job_each=False,
                                            resynced=1),
        "resync": GitHubProof(3, completed=3, machines=3, one_job_each=True, resynced=0),
        "left by the scaler": GitHubProof(3, completed=3, machines=3, one_job_each=True,
                                          resynced=1, machines_left=1),
        "still registered": GitHubProof(3, completed=3, machines=3, one_job_each=True,
                                        resynced=1, runners_left=1),
        "in the queue": GitHubProof(3, completed=3, machines=3, one_job_each=True,
                                    resynced=1, queue_left=1),
    }
    for words, proof in broken.items():
        assert len(proof.problems) == 1 and words in proof.problems[0], (words, proof.problems)
        assert "github: FAIL" in proof.format()


def test_the_env_check_finds_a_secret_or_a_shared_jit_config(
    local_api: LocalAPIServer, github_api_factory: Callable[..., LocalGitHubServer],
    github_app_key: AppKey, redis_url: str,
) -> None:
    github = github_api_factory()
    ids = DevIds.new("dev-envcheck")
    secret = Secret("webhook-canary-5b1f")
    settings = github_dev_settings(api_url=local_api.url, token=local_api.token,
                                   redis_url=redis_url, ids=ids, github_url=github.url,
                                   private_key=github_app_key.private_pem, webhook_secret=secret)
    assert settings.pools[0].name == RUNNERS_POOL
    secrets = {"the Fly token": Secret(local_api.token), "the webhook secret": secret,
               "the App key": github_app_key.private_pem}
    run = GitHubRun(jobs=2, timeout=1, run_time_s=0, out=sys.stdout, api=local_api,
                    github=github, settings=settings, secrets=secrets)
    pem_line = github_app_key.private_pem.get_secret_value().splitlines()[3]
    run.envs = {"gh-a": {JITCONFIG_ENV: "jit-a", "PYTHONPATH": "/src"},
                "gh-b": {JITCONFIG_ENV: "jit-b"}}
    assert run._env_problems() == []
    run.envs["gh-b"]["DEBUG"] = f"x{secret.get_secret_value()}x"
    run.envs["gh-c"] = {JITCONFIG_ENV: "jit-a", "K": pem_line}
    run.envs["gh-d"] = {"FLY": local_api.token}
    assert sorted(run._env_problems()) == sorted([
        "machine gh-b's env holds the webhook secret",
        "machine gh-c's env holds part of the App key",
        f"machine gh-d got no {JITCONFIG_ENV}",
        "machine gh-d's env holds the Fly token",
        "a JIT config reached more than one machine",
    ])


def test_a_lost_webhook_of_the_oldest_job_still_gets_every_job_a_runner(
    redis_url: str, redis_prefix: str, github_app_key: AppKey, tmp_path: Path,
) -> None:
    """The hard case for count-based accounting: the *first* job's webhook is lost. GitHub gives
    the oldest job to the first runner to come online, so the runners launched for jobs 2 and 3
    run jobs 1 and 2, and job 3, whose own message was used up, must still get a runner (from
    the resync's listing, or from counting GitHub's queued jobs against runners)."""
    ids = DevIds.new(f"{redis_prefix}ghfirst".replace(":", "-"))
    api = LocalAPIServer(runtime="process", timings="fast", rate_limits="fly",
                         workdir=tmp_path / "machines")
    try:
        with LocalGitHubServer(github_app_key.public, app_id="1", installations=(1,)) as github:
            settings, secrets = GitHubRun.prepare(api, github, redis_url=redis_url, ids=ids,
                                                  private_key=github_app_key.private_pem,
                                                  run_time_s=0.1)
            run = GitHubRun(jobs=3, timeout=15, run_time_s=0.1, out=sys.stdout, api=api,
                            github=github, settings=settings, secrets=secrets, lost=0)
            proof = asyncio.run(run.run(asyncio.Event()))
            # runners took jobs oldest first, whichever job they were launched for
            assert [job for job, _ in github.broker.history][:1] == [run.job_ids[0]]
    finally:
        api.close()  # the keys under the namespace go with redis_prefix's
    assert proof.problem is None, proof.format()
    assert (proof.completed, proof.machines, proof.one_job_each) == (3, 3, True), proof.format()
    assert (proof.machines_left, proof.runners_left, proof.queue_left) == (0, 0, 0)
    assert proof.env_problems == []
