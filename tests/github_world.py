"""The GitHub runner tests' world: a scaler's GitHub runtime and reconciler on the real Redis, the
local Machines API (process runtime) and the local GitHub stand-in, all over real HTTP.
``pytest_plugins = ["tests.github_world"]`` gives a test module the ``world_factory`` fixture."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.requests import Request

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.github.local_server import LocalGitHubServer
from scaler.github.runtime import GitHubRuntime
from scaler.github.testing import AppKey
from scaler.jobs.keys import QueueKeys
from scaler.local.server import LocalAPIServer
from scaler.loop.governor import MemoryGovernor
from scaler.loop.reconciler import Reconciler
from scaler.telemetry.metrics import Metrics
from tests.github_scaler import API_TOKEN, github_settings, signed
from tests.scaler_harness import create_app, fly_client, machines

__all__ = ["QUEUE", "World", "world_factory"]

QUEUE = "gh-jobs"
SLEEP = ["python", "-c", "import time; time.sleep(120)"]


@dataclass
class World:
    """One scaler with a github pool (``gh``, queue ``gh-jobs``) and what it talks to."""

    settings: Settings
    runtime: GitHubRuntime
    reconciler: Reconciler
    github: LocalGitHubServer
    fly: httpx.Client
    app: str
    redis: aioredis.Redis

    async def deliver(self, job_id: int, action: str) -> dict[str, Any]:
        body, headers = signed(self.github.state.webhook_payload(job_id, action))
        scope = {"type": "http", "method": "POST", "path": "/v1/webhooks/github",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        response = await self.runtime.webhook.handle(Request(scope, receive))
        assert response.status_code in (200, 202), response.body
        answer: dict[str, Any] = json.loads(bytes(response.body))
        return answer

    async def tick(self) -> Any:
        result = await self.reconciler.tick()
        await self.reconciler.executor.drain(wait_s=20)
        return result

    def machines(self) -> list[dict[str, Any]]:
        return [m for m in machines(self.fly, self.app) if m["state"] != "destroyed"]

    def runner_names(self) -> set[str]:
        return {r["name"] for r in self.github.state.all_runners()}

    async def ready_count(self) -> int:
        keys = QueueKeys(self.settings.redis.namespace, self.settings.redis.prefix, QUEUE)
        return int(await self.redis.llen(keys.ready))


@pytest.fixture
async def world_factory(
    local_api: LocalAPIServer, github_api_factory: Any, redis_url: str, redis_prefix: str,
    aredis: aioredis.Redis, github_app_key: AppKey,
) -> AsyncIterator[Any]:
    github_api: LocalGitHubServer = github_api_factory(static_tokens=[API_TOKEN])
    made: list[World] = []

    async def make(*, app_auth: bool = False, scaler: dict[str, Any] | None = None,
                   **pool: Any) -> World:
        github = pool.pop("github", None) or {}
        env = {"FLY_API_TOKEN": local_api.token}
        if app_auth:
            github.update(app_id=1, installation_id=1)
            env["GITHUB_APP_PRIVATE_KEY"] = github_app_key.private_pem.get_secret_value()
            env["SCALER_GITHUB_TOKEN"] = ""
        fly = fly_client(local_api.url, local_api.token)
        app = create_app(fly)
        settings = github_settings(
            redis_prefix, github_api.url, redis_url=redis_url, fly_url=local_api.url,
            pool={"app": app, "cmd": SLEEP, "env": {"RUNNER_WORKDIR": "/tmp/w"}, **pool},
            github=github, env=env, scaler=scaler,
        )
        metrics = Metrics()
        runtime = GitHubRuntime(settings, aredis, metrics)
        rec = Reconciler(
            settings, AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url), aredis,
            MemoryGovernor(), metrics, list_interval=0.0, runners=runtime.launcher,
        )
        w = World(settings, runtime, rec, github_api, fly, app, aredis)
        made.append(w)
        return w

    yield make
    for w in made:
        await w.reconciler.executor.drain(wait_s=5)
        for m in w.machines():
            w.fly.delete(f"/v1/apps/{w.app}/machines/{m['id']}", params={"force": "true"})
        await w.runtime.aclose()
