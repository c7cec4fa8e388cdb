"""Helpers for the GitHub runner tests: a scaler's settings with a github pool pointed at the local
GitHub stand-in, its GitHub runtime on the real Redis, and signed deliveries."""

from __future__ import annotations

import json
import uuid
from typing import Any

from scaler.config import Settings, parse_settings
from scaler.github.local_server import LocalGitHubServer
from scaler.github.signature import SIGNATURE_HEADER, sign
from scaler.secret import Secret

WEBHOOK_SECRET = "whsec-canary-7d1f0a9b3c5e"
API_TOKEN = "ghtok-canary-4b8e2f6a1d9c"
REPO = "acme/api"
LABELS = ("self-hosted", "fly")


def github_settings(
    prefix: str, api_url: str, *, redis_url: str = "redis://127.0.0.1:6379/0",
    fly_url: str = "http://127.0.0.1:1", pool: dict[str, Any] | None = None,
    github: dict[str, Any] | None = None, env: dict[str, str] | None = None,
    scaler: dict[str, Any] | None = None,
) -> Settings:
    """Settings with one github pool ``gh`` (queue ``gh-jobs``, labels ``fly``, repository
    ``acme/api``), token auth against ``api_url``, the canary webhook secret."""
    spec = {"name": "gh", "mode": "github", "app": "ci-runners", "queues": ["gh-jobs"],
            "image": "runner:latest", "labels": ["fly"], "repositories": [REPO],
            "max_machines": 5, **(pool or {})}
    data = {
        "fly": {"api_url": fly_url},
        "redis": {"url": redis_url, "namespace": prefix, "prefix": prefix},
        "github": {"api_url": api_url, **(github or {})},
        "scaler": scaler or {},
        "pools": [spec],
    }
    return parse_settings(data, {"FLY_API_TOKEN": "fly-canary-0c9a8e7d6b5f",
                                 "SCALER_GITHUB_TOKEN": API_TOKEN,
                                 "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET, **(env or {})})


def signed(
    payload: dict[str, Any] | bytes, *, event: str = "workflow_job",
    delivery: str | None = None, secret: str = WEBHOOK_SECRET,
) -> tuple[bytes, dict[str, str]]:
    """A body and the headers GitHub would send with it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        SIGNATURE_HEADER: sign(Secret(secret), body),
        "Content-Type": "application/json",
    }


def queue_job(github: LocalGitHubServer, labels: tuple[str, ...] = LABELS,
              repository: str = REPO, **kw: Any) -> int:
    """Queue a job on the stand-in; its id."""
    return int(github.state.queue_job(repository, labels, **kw)["id"])
