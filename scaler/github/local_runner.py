"""A stand-in for GitHub's runner, for the local GitHub stand-in: ``python -m
scaler.github.local_runner``, the command a github pool's machines run under ``scaler dev``.

It does what ``./run.sh --jitconfig "$GITHUB_RUNNER_JITCONFIG"`` does with a real JIT config, as
far as the scaler can tell: read the config from ``GITHUB_RUNNER_JITCONFIG`` (its only secret: it
reads no other variable), register as that runner with the server the config names, wait until
GitHub gives it a job (any job its labels serve, not necessarily the one it was launched for),
report the job started, "run" it for ``--run-time`` seconds, report it completed with
``--conclusion``, and exit 0: a JIT runner is ephemeral and takes one job.

Exit codes: 0 one job ran; 1 the JIT config is missing or unreadable; 2 the runner was
deregistered (or the server refused it) before it got a job; 3 no job within ``--max-wait``.
It prints one line per step, never the config or its credential.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
from dataclasses import dataclass

import httpx

__all__ = ["ENV_VAR", "JitConfig", "main", "read_jit_config"]

ENV_VAR = "GITHUB_RUNNER_JITCONFIG"
_POLL_S = 10.0


@dataclass(frozen=True)
class JitConfig:
    """What a runner needs from its JIT config: who it is, where to go, its credential."""

    runner_id: int
    name: str
    server_url: str
    token: str

    def __repr__(self) -> str:
        return f"JitConfig(runner_id={self.runner_id}, name={self.name!r})"


class JitConfigError(ValueError):
    """The JIT config is missing or not one the stand-in issued."""


def read_jit_config(encoded: str | None) -> JitConfig:
    """Decode an ``encoded_jit_config`` (base64 of JSON with ``.runner`` and ``.credentials``)."""
    if not encoded:
        raise JitConfigError(f"{ENV_VAR} is not set: the machine was started without a JIT "
                             "config (the scaler passes one to each runner machine)")
    try:
        data = json.loads(base64.b64decode(encoded, validate=True))
        runner, credentials = data[".runner"], data[".credentials"]
        return JitConfig(int(runner["AgentId"]), str(runner["AgentName"]),
                         str(runner["ServerUrl"]).rstrip("/"),
                         str(credentials["Data"]["token"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise JitConfigError(f"{ENV_VAR} is not a JIT config of the local GitHub stand-in "
                             "(base64 JSON with .runner.AgentId, .runner.ServerUrl and "
                             ".credentials.Data.token)") from None


def _say(text: str) -> None:
    print(f"local-runner: {text}", flush=True)


def run(config: JitConfig, *, run_time_s: float, conclusion: str, max_wait_s: float | None,
        http: httpx.Client) -> int:
    """Register, take one job, run it, report it; the exit code."""
    headers = {"Authorization": f"Bearer {config.token}"}
    answer = http.post(f"{config.server_url}/_runner/session", headers=headers)
    if answer.status_code != 200:
        _say(f"runner {config.name} could not register: HTTP {answer.status_code}")
        return 2
    _say(f"runner {config.name} (id {config.runner_id}) online, waiting for a job")
    started = time.monotonic()
    while True:
        wait = _POLL_S if max_wait_s is None else max(
            0.0, min(_POLL_S, max_wait_s - (time.monotonic() - started)))
        answer = http.get(f"{config.server_url}/_runner/job", params={"wait": wait},
                          headers=headers, timeout=wait + 10)
        if answer.status_code == 200:
            break
        if answer.status_code != 204:
            _say(f"runner {config.name} deregistered before it got a job "
                 f"(HTTP {answer.status_code}); exiting")
            return 2
        if max_wait_s is not None and time.monotonic() - started >= max_wait_s:
            _say(f"runner {config.name} got no job within {max_wait_s:g}s; exiting")
            return 3
    job = answer.json()
    job_url = f"{config.server_url}/_runner/jobs/{job['id']}"
    http.post(f"{job_url}/started", headers=headers).raise_for_status()
    _say(f"runner {config.name} running job {job['id']} ({job['name']}, labels "
         f"{','.join(job['labels'])})")
    time.sleep(run_time_s)  # the job's work
    done = http.post(f"{job_url}/completed", headers=headers, json={"conclusion": conclusion})
    if done.status_code != 204:
        _say(f"job {job['id']} could not be reported completed: HTTP {done.status_code} "
             "(cancelled meanwhile?)")
        return 0
    _say(f"runner {config.name} completed job {job['id']}: {conclusion}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m scaler.github.local_runner",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run-time", type=float, default=0.5, metavar="S",
                        help="seconds each job runs (default 0.5)")
    parser.add_argument("--conclusion", default="success",
                        choices=("success", "failure", "cancelled", "skipped", "timed_out"),
                        help="how the job ends (default success)")
    parser.add_argument("--max-wait", type=float, default=None, metavar="S",
                        help="give up after S seconds without a job (default: wait, as a real "
                        "runner does, until the scaler deregisters it)")
    args = parser.parse_args(argv)
    try:
        config = read_jit_config(os.environ.get(ENV_VAR))
    except JitConfigError as exc:
        _say(str(exc))
        return 1
    # trust_env=False: no proxy or certificate variables are read, only the JIT config
    with httpx.Client(timeout=30, trust_env=False) as http:
        try:
            return run(config, run_time_s=args.run_time, conclusion=args.conclusion,
                       max_wait_s=args.max_wait, http=http)
        except httpx.HTTPError as exc:
            _say(f"runner {config.name}: the stand-in GitHub is unreachable "
                 f"({type(exc).__name__}); exiting")
            return 2


if __name__ == "__main__":
    sys.exit(main())
