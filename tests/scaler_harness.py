"""A scaler running in-process against real Redis and a local Machines API, for end-to-end tests.

``ScalerHarness`` builds settings for a per-job pool (and optionally a worker pool) whose machines
run ``python -m workers.runner`` with the actors of ``tests.apps.sample_tasks``, starts
:class:`scaler.loop.service.Service` on a private event loop thread, and offers helpers that wait on
conditions with a deadline (end-to-end tests observe real processes; there is no event to wait on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from scaler.config import Settings, parse_settings
from scaler.local.testing import eventually, free_port  # re-exported for the e2e tests
from scaler.loop.service import Service

__all__ = [
    "ROOT",
    "ScalerHarness",
    "create_app",
    "enqueue",
    "eventually",
    "fly_client",
    "machines",
    "make_settings",
    "prometheus_server",
    "redis_client",
    "require_binary",
]

ROOT = Path(__file__).resolve().parent.parent


def make_settings(
    *, api_url: str, token: str, redis_url: str, namespace: str, prefix: str, app: str,
    queue: str, max_machines: int = 5, extra_pool: dict[str, Any] | None = None,
    scaler: dict[str, Any] | None = None, pools: list[dict[str, Any]] | None = None,
    http: dict[str, Any] | None = None, env: dict[str, str] | None = None,
    sections: dict[str, Any] | None = None,
) -> Settings:
    """Settings for one per-job pool running the sample actors on ``queue``; ``env`` is the
    scaler's environment (e.g. ``SCALER_ENQUEUE_TOKENS``)."""
    machine_env = {
        "SCALER_ACTORS": "tests.apps.sample_tasks",
        "REDIS_URL": redis_url,
        "SAMPLE_QUEUE": queue,
        "PYTHONPATH": str(ROOT),
        "FLY_SCALER_PREFIX": prefix,
    }
    pool: dict[str, Any] = {
        "name": "jobs", "mode": "per-job", "app": app, "queues": [queue],
        "max_machines": max_machines, "image": "local/sample:latest",
        "cmd": ["python", "-m", "workers.runner"], "env": machine_env,
        "boot_timeout": "20s", "max_runtime": "60s", **(extra_pool or {}),
    }
    data = {
        "fly": {"api_url": api_url},
        "redis": {"url": redis_url, "namespace": namespace, "prefix": prefix},
        "scaler": {"max_machines": 50, "resync_interval": "1s", "orphan_grace": "2s",
                   "shared_rate_limits": True, **(scaler or {})},
        "pools": pools if pools is not None else [pool],
        "http": {"host": "127.0.0.1", **(http or {})},
        **(sections or {}),
    }
    return parse_settings(data, env={"FLY_API_TOKEN": token, **(env or {})})


class ScalerHarness:
    """Runs a :class:`Service` on a background thread until :meth:`stop`."""

    def __init__(self, settings: Settings, **service_options: Any) -> None:
        self.settings = settings
        self.service_options = {"http": False, **service_options}
        self.service: Service | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> ScalerHarness:
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self._loop)

            async def go() -> None:
                self._stop = asyncio.Event()
                self.service = Service(self.settings, **self.service_options)
                started.set()
                await self.service.run(self._stop)

            try:
                self._loop.run_until_complete(go())
            except BaseException as exc:  # surfaced by stop()
                self.error = exc
                started.set()

        self._thread = threading.Thread(target=main, name="scaler-harness", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the scaler did not stop"
        self._loop.close()
        if self.error is not None:
            raise self.error


def fly_client(api_url: str, token: str) -> httpx.Client:
    """A plain httpx client on the local Machines API."""
    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                        timeout=30)


def create_app(api: httpx.Client) -> str:
    """A fresh app on the local API."""
    name = f"app-{uuid.uuid4().hex[:10]}"
    r = api.post("/v1/apps", json={"name": name, "org_slug": "personal"})
    assert r.status_code == 201, r.text
    return name


def machines(api: httpx.Client, app: str, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Every machine of ``app``."""
    r = api.get(f"/v1/apps/{app}/machines", params={"include_deleted": include_deleted})
    r.raise_for_status()
    out: list[dict[str, Any]] = r.json()
    return out


def enqueue(redis_url: str, namespace: str, prefix: str, queue: str, actor: str,
            *args: Any, **options: Any) -> str:
    """Enqueue one sample-actor message in a subprocess-free way; returns its message_id."""
    import dramatiq

    from workers.enqueue import redis_broker_from_env

    env = {"REDIS_URL": redis_url, "FLY_SCALER_NAMESPACE": namespace, "FLY_SCALER_PREFIX": prefix}
    broker = redis_broker_from_env(env, set_default=False)
    msg: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=args, kwargs={}, options=options
    )
    broker.declare_queue(queue)
    sent = broker.enqueue(msg)
    broker.close()
    return str(sent.message_id)


def require_binary(name: str, install: str) -> str:
    """The path of ``name``; skip the test when it is absent, but fail under CI (``CI`` set),
    where ``.ci/run`` installs it."""
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message + " and CI is set")
        pytest.skip(message)
    return path


@contextlib.contextmanager
def prometheus_server(target: str | None, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus (Debian's binary) on a free loopback port, scraping ``target``
    (host:port, job ``fly-scaler``) every second when given; yields its base URL."""
    binary = require_binary("prometheus", "Debian: apt-get install prometheus")
    port = free_port()
    scrape = [{"job_name": "fly-scaler", "metrics_path": "/metrics",
               "static_configs": [{"targets": [target]}]}] if target else []
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape,
    }))
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"prometheus exited: {log_path.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
                return False

            eventually(ready, timeout=20, what="prometheus ready", interval=0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)
