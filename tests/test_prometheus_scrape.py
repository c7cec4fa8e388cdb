"""A real Prometheus scrapes a running scaler's /metrics, and every query of the Grafana dashboard
returns data through Prometheus' HTTP API (no panel is silently empty against the real exposition).

The scaler is the real thing (:class:`scaler.loop.service.Service` with its HTTP port) running
against real Redis and the local Machines API (process runtime): a per-job pool runs a few jobs, a
worker pool keeps one worker up, and the HTTP enqueue API takes one message and refuses one token.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaler.local.server import LocalAPIServer
from tests.scaler_harness import (
    ROOT,
    ScalerHarness,
    create_app,
    enqueue,
    eventually,
    fly_client,
    make_settings,
    prometheus_server,
    require_binary,
)

DASHBOARD = ROOT / "grafana" / "dashboards" / "fly-scaler.json"
# Grafana's variables, as Grafana would expand them with "All" selected and a 1s scrape interval.
SUBSTITUTIONS = {"$__rate_interval": "10s", "$__range": "1m", "$pool": ".*", "$queue": ".*"}
TOKEN = "scrape-test-token"

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]




def _prometheus_binary() -> str:
    return require_binary("prometheus", "Debian: apt-get install prometheus")


@contextlib.contextmanager
def _running_scaler_metrics_url(
    local_api: LocalAPIServer, redis_url: str, prefix: str
) -> Iterator[str]:
    """Yield the /metrics URL of a running scaler doing real work; stop it afterwards."""
    api = fly_client(local_api.url, local_api.token)
    app = create_app(api)
    jobs, work = f"j{uuid.uuid4().hex[:6]}", f"w{uuid.uuid4().hex[:6]}"
    ns, keys = prefix, f"{prefix}fs"
    env = {"SCALER_ACTORS": "tests.apps.sample_tasks", "REDIS_URL": redis_url,
           "PYTHONPATH": str(ROOT), "FLY_SCALER_PREFIX": keys}
    pools: list[dict[str, Any]] = [
        {"name": "ci", "mode": "per-job", "app": app, "queues": [jobs], "max_machines": 3,
         "image": "local/sample:latest", "cmd": ["python", "-m", "workers.runner"],
         "env": {**env, "SAMPLE_QUEUE": jobs}, "http_actors": ["record"]},
        {"name": "default", "mode": "worker", "app": app, "queues": [work], "max_machines": 2,
         "min_machines": 1, "idle_timeout": "60s", "image": "local/sample:latest",
         "cmd": ["python", "-m", "workers.runner", "--drain"],
         "env": {**env, "SAMPLE_QUEUE": work}},
    ]
    settings = make_settings(
        api_url=local_api.url, token=local_api.token, redis_url=redis_url, namespace=ns,
        prefix=keys, app=app, queue=jobs, pools=pools, env={"SCALER_ENQUEUE_TOKENS": TOKEN},
        sections={"costs": {"budget_per_hour": 100.0}},  # a budget, so its panel has series
    )
    for i in range(3):
        enqueue(redis_url, ns, keys, jobs, "record", f"{ns}:out", f"r{i}")
    harness = ScalerHarness(settings, http=True, http_port=0).start()
    try:
        def port() -> int | None:
            return None if harness.service is None else harness.service.http_port

        base = f"http://127.0.0.1:{eventually(port, timeout=20, what='the HTTP port')}"
        eventually(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=20,
                   what="the scaler ready")
        message = {"actor": "record", "args": [f"{ns}:out", "http"]}
        accepted = httpx.post(f"{base}/v1/queues/{jobs}/messages", json=message,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        assert accepted.status_code == 202, accepted.text
        refused = httpx.post(f"{base}/v1/queues/{jobs}/messages", json=message,
                             headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 403
        yield f"{base}/metrics"
    finally:
        harness.stop()


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
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    _prometheus_binary()  # skip before starting anything when it is absent
    with _running_scaler_metrics_url(local_api, redis_url, redis_prefix) as metrics_url:
        target = metrics_url.removeprefix("http://").removesuffix("/metrics")
        with prometheus_server(target, tmp_path) as prom:
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
