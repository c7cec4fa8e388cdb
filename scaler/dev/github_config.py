"""The configuration ``scaler dev --github`` runs: one github pool whose machines run the stand-in
runner (:mod:`scaler.github.local_runner`), and a ``[github]`` section pointing at the local
GitHub stand-in with a throwaway App key and webhook secret (given as env, as in production)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scaler.config import Settings, parse_settings
from scaler.dev.config import DevIds
from scaler.secret import Secret

__all__ = [
    "APP_ID",
    "INSTALLATION_ID",
    "JOB_LABELS",
    "REPOSITORY",
    "RUNNERS_APP",
    "RUNNERS_POOL",
    "RUNNERS_QUEUE",
    "github_dev_settings",
]

RUNNERS_POOL, RUNNERS_QUEUE, RUNNERS_APP = "gh", "github", "example-runners"
REPOSITORY = "acme/api"
JOB_LABELS = ("self-hosted", "fly", "linux")
APP_ID, INSTALLATION_ID = 1, 1
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def github_dev_settings(
    *,
    api_url: str,
    token: str,
    redis_url: str,
    ids: DevIds,
    github_url: str,
    private_key: Secret,
    webhook_secret: Secret,
    max_machines: int = 4,
    run_time_s: float = 0.5,
    resync_interval: str = "2s",
) -> Settings:
    """The validated settings of a ``scaler dev --github`` run: pool ``gh`` (queue ``github``)
    serving labels ``fly, linux`` for repository ``acme/api``, resync every ``resync_interval``
    (short, so that the lost webhook's job is found quickly)."""
    # The pool's env holds no secret (not even the Redis URL): only where the module is, so that
    # a checkout that is not installed works too.
    path = os.pathsep.join(p for p in (str(_SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path}
    pool: dict[str, Any] = {
        "name": RUNNERS_POOL, "mode": "github", "app": RUNNERS_APP, "queues": [RUNNERS_QUEUE],
        "image": "local/github-runner:latest",
        "cmd": ["python", "-m", "scaler.github.local_runner", "--run-time", f"{run_time_s:g}",
                "--max-wait", "120"],
        "env": env, "labels": [label for label in JOB_LABELS if label != "self-hosted"],
        "repositories": [REPOSITORY], "max_machines": max_machines, "max_launches": 3,
        "boot_timeout": "30s", "max_runtime": "2m", "kill_timeout": "5s",
    }
    data = {
        "fly": {"api_url": api_url},
        "redis": {"url": redis_url, "namespace": ids.namespace, "prefix": ids.prefix},
        "scaler": {"id": ids.namespace, "max_machines": max_machines,
                   "resync_interval": "1s", "orphan_grace": "5s"},
        "http": {"host": "127.0.0.1"},
        "github": {"api_url": github_url, "app_id": APP_ID, "installation_id": INSTALLATION_ID,
                   "resync_interval": resync_interval, "runner_idle_timeout": "60s",
                   "max_wait": "10s"},
        "pools": [pool],
    }
    return parse_settings(data, env={
        "FLY_API_TOKEN": token,
        "GITHUB_APP_PRIVATE_KEY": private_key.get_secret_value(),
        "GITHUB_WEBHOOK_SECRET": webhook_secret.get_secret_value(),
    })
