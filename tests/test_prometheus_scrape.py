"""A real Prometheus scrapes a scaler's /metrics, and every query of the Grafana dashboard returns
data through Prometheus' HTTP API (so no panel is silently empty against the real exposition).

The scaler side: :func:`_running_scaler_metrics_url`. Until the reconciler can run against Redis and
the local Machines API in a test, it serves the real HTTP app (``scaler.http.create_http_app``,
with its ``/metrics`` endpoint, on real Redis) and drives its :class:`Metrics` with realistic values
through their public attributes, as the reconciler does each tick. Swap its body for a running
``scaler`` once that exists; the test needs only the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from scaler.http import QueueInfo, create_http_app
from scaler.metrics import Metrics
from scaler.secret import Secret

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "fly-scaler.json"
# Grafana's variables, as Grafana would expand them with "All" selected and a 1s scrape interval.
SUBSTITUTIONS = {"$__rate_interval": "10s", "$__range": "1m", "$pool": ".*", "$queue": ".*"}
POOLS = {"ci": "shared-cpu-2x", "default": "shared-cpu-1x"}
QUEUES = {"ci": "jobs", "default": "default"}
ACTIONS = ("Machines_create", "Machines_list", "Machines_start", "Machines_delete")

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(90)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = ("the prometheus server is not installed (Debian: apt-get install prometheus; "
                   ".ci/run installs it with WITH_PROMETHEUS=1)")
        if os.environ.get("CI"):
            pytest.fail(message + " and CI is set")
        pytest.skip(message)
    return path


def _tick(metrics: Metrics, rng: random.Random, now: float) -> None:
    """One reconcile tick's worth of metric updates, as the reconciler records them."""
    for pool, size in POOLS.items():
        queue = QUEUES[pool]
        for state, value in (("ready", rng.randint(0, 20)), ("delayed", rng.randint(0, 3)),
                             ("in_flight", rng.randint(0, 5)), ("dead", 1), ("claimed", 2)):
            metrics.queue_messages.labels(queue, state).set(value)
        metrics.queue_oldest_age.labels(queue).set(rng.uniform(0, 90))
        for state, value in (("started", 3), ("stopped", 1), ("starting", 1), ("failed", 0)):
            metrics.machines.labels(pool, state).set(value)
        metrics.desired_machines.labels(pool).set(4)
        metrics.live_machines.labels(pool).set(4)
        metrics.machine_cap.labels("pool", pool).set(10)
        metrics.cap_usage.labels("pool", pool).set(0.4)
        metrics.launches.labels(pool, "created").inc()
        metrics.launches.labels(pool, "rate_limited").inc(0.2)
        metrics.enqueue_to_started.labels(pool).observe(rng.uniform(0.5, 8))
        metrics.enqueue_to_launch.labels(pool).observe(rng.uniform(0.005, 0.2))
        metrics.job_run.labels(pool).observe(rng.uniform(5, 120))
        metrics.jobs_finished.labels(pool, "done").inc()
        metrics.reaps.labels(pool, "stopped").inc()
        metrics.requeues.labels(pool, "machine_failed").inc(0.1)
        metrics.dead_letters.labels(pool, "max_launches").inc(0.05)
        metrics.decisions.labels(pool, "launch", "taken").inc()
        metrics.decisions_not_taken.labels(pool, "cap_pool").inc()
        metrics.launches_waiting_budget.labels(pool).set(1)
        metrics.machine_seconds.labels(pool, size).inc(3)
        metrics.cost.labels(pool, size).inc(3 * 0.0000015)
    metrics.machine_cap.labels("global", "global").set(100)
    metrics.cap_usage.labels("global", "global").set(0.08)
    for action in ACTIONS:
        metrics.observe_api_call(action, 200, rng.uniform(0.02, 0.4))
        metrics.governor_wait.labels(action).observe(rng.uniform(0, 0.5))
        metrics.governor_waiting.labels(action).set(rng.randint(0, 2))
    metrics.observe_api_call("Machines_create", 429, 0.05)
    metrics.observe_api_call("Machines_list", None, 1.0)
    metrics.tick_duration.observe(rng.uniform(0.01, 0.3))
    for stage in ("observe", "plan", "act"):
        metrics.stage_duration.labels(stage).observe(rng.uniform(0.001, 0.1))
    metrics.ticks.labels("resync").inc()
    metrics.tick_errors.labels("observe").inc(0.1)
    metrics.data_unknown.labels("redis").set(0)
    metrics.data_unknown.labels("fly:my-workers").set(0)
    metrics.leader.set(1)
    metrics.leader_changes.labels("gained")
    metrics.last_tick.set(now)


@contextlib.contextmanager
def _running_scaler_metrics_url(redis_url: str, prefix: str) -> Iterator[str]:
    """Yield the /metrics URL of a scaler serving realistic, moving metrics; stop it afterwards."""
    metrics = Metrics()
    metrics.leader_changes.labels("gained").inc()
    # A listening socket before the server starts: clients queue in its backlog, no wait needed.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = int(sock.getsockname()[1])
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        client = aioredis.from_url(redis_url)
        try:
            app = create_http_app(
                metrics=metrics, redis=client, namespace=f"{prefix}-dramatiq", prefix=prefix,
                queues={q: QueueInfo(frozenset({"build"})) for q in QUEUES.values()},
                tokens=[Secret("scrape-test-token")], ready=lambda: (True, "ok"),
            )
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
            state["server"] = server
            started.set()
            await server.serve(sockets=[sock])
        finally:
            started.set()
            await client.aclose()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="scaler-http")
    thread.start()
    stop = threading.Event()
    driver: threading.Thread | None = None
    try:
        assert started.wait(15) and "server" in state, "the scaler's HTTP app did not start"
        base = f"http://127.0.0.1:{port}"
        # The enqueue API records its own metrics: one accepted message, one refused token.
        message = {"actor": "build", "args": [1]}
        accepted = httpx.post(f"{base}/v1/queues/jobs/messages", json=message,
                              headers={"Authorization": "Bearer scrape-test-token"})
        assert accepted.status_code == 202, accepted.text
        refused = httpx.post(f"{base}/v1/queues/jobs/messages", json=message,
                             headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 403

        def drive() -> None:
            rng = random.Random(7)
            while True:
                _tick(metrics, rng, time.time())
                if stop.wait(0.2):  # one tick per 200 ms: counters move between scrapes
                    return

        driver = threading.Thread(target=drive, name="scaler-ticks")
        driver.start()
        yield f"{base}/metrics"
    finally:
        stop.set()
        if driver is not None:
            driver.join(10)
        server = state.get("server")
        if server is not None:
            server.should_exit = True
        thread.join(15)
        sock.close()


@contextlib.contextmanager
def _prometheus(target: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server scraping ``target`` (host:port) every second; yields its base URL."""
    binary = _prometheus_binary()
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "fly-scaler", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}],
    }))
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)  # polling an external process: there is no event to wait on
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _query(base: str, promql: str) -> list[Any]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{promql}: {body.get('error')}"
    result: list[Any] = body["data"]["result"]
    return result


def _expand(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def _panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p.get("type") != "row"]
    panels += [n for p in dash["panels"] if p.get("type") == "row" for n in p.get("panels", [])]
    return [(p["title"], _expand(t["expr"])) for p in panels for t in p["targets"]]


def test_every_dashboard_query_returns_data_from_a_scraped_scaler(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    _prometheus_binary()  # skip before starting anything when it is absent
    with _running_scaler_metrics_url(redis_url, redis_prefix) as metrics_url:
        target = metrics_url.removeprefix("http://").removesuffix("/metrics")
        with _prometheus(target, tmp_path) as prom:
            # rate() over the 10s window needs several scrapes of moving counters.
            deadline = time.monotonic() + 30
            while True:
                scraped = _query(prom, 'count_over_time(up{job="fly-scaler"}[30s])')
                if scraped and float(scraped[0]["value"][1]) >= 5:
                    break
                assert time.monotonic() < deadline, f"too few scrapes: {scraped}"
                time.sleep(0.2)  # polling an external process: there is no event to wait on
            up = _query(prom, 'up{job="fly-scaler"}')
            assert [s["value"][1] for s in up] == ["1"], up

            empty = [f"{title}: {expr}" for title, expr in _panel_queries()
                     if not _query(prom, expr)]
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
