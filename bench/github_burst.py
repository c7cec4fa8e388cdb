"""P6 GitHub runners: a burst of queued ``workflow_job`` webhooks -> every runner machine started,
at Fly's limits.

The local GitHub stand-in queues N jobs at once and delivers their signed webhooks to the scaler's
``POST /v1/webhooks/github`` (github pool, cap N); the scaler asks the stand-in for a JIT config
per runner and creates the machine on the local Machines API with Fly's rate limits on (create:
1/s per app, burst 3) and realistic timings (create -> started 3 s), sim runtime. A job is not
bound to a machine (GitHub gives a job to any idle runner), so latencies pair the k-th webhook
with the k-th machine to start: p50 and p99 of those, and the time until the last one started.
The baseline is what Fly's create limit allows at best: the burst at once, then one per second,
plus the boot time. Warm slots do not exist for runners yet; a JIT config is single-use, so a
stopped runner machine could not be reused as it is.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import BenchConfig, ServiceThread, percentile, redis_keys, row
from scaler.dev.config import DevIds
from scaler.dev.github_config import JOB_LABELS, REPOSITORY, RUNNERS_APP, github_dev_settings
from scaler.fly.limits import limit_for
from scaler.github.local_server import LocalGitHubServer
from scaler.github.testing import make_app_key
from scaler.local.config import REALISTIC
from scaler.local.server import LocalAPIServer
from scaler.local.testing import eventually
from scaler.secret import Secret

__all__ = ["run"]

GOAL_RATIO = 1.25
"""The last runner must start within this many times the best Fly's create limit allows."""


def _started_at(record: Any) -> float | None:
    """When a machine first reached ``started`` (wall seconds), from its events."""
    times = [e["timestamp"] / 1000 for e in record.events
             if e.get("type") in ("launch", "start") and e.get("status") == "started"]
    return min(times) if times else None


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P6; returns ``{"rows": [...], "details": {...}}``."""
    jobs = cfg.n(10, 100, minimum=4)
    limit = limit_for("Machines_create")
    ideal = max(0.0, (jobs - limit.burst) / limit.rate) + REALISTIC.create
    key = make_app_key()
    secret = Secret("bench-webhook-secret")
    with (
        redis_keys(cfg, "p6") as ns,
        LocalAPIServer(runtime="sim", rate_limits="fly", timings="realistic") as api,
        LocalGitHubServer(key.public, app_id="1", installations=(1,)) as github,
        api.client() as http,
    ):
        http.post("/v1/apps", json={"name": RUNNERS_APP, "org_slug": "personal"}
                  ).raise_for_status()
        settings = github_dev_settings(
            api_url=api.url, token=api.token, redis_url=cfg.redis_url, ids=DevIds(ns),
            github_url=github.url, private_key=key.private_pem, webhook_secret=secret,
            max_machines=jobs, resync_interval="10m",
        )
        with ServiceThread(settings, http=True, http_port=0) as scaler:
            eventually(lambda: scaler.service is not None and scaler.service.http_port,
                       30, "the scaler's HTTP port", interval=0.05)
            assert scaler.service is not None
            github.hooks.configure(
                f"http://127.0.0.1:{scaler.service.http_port}/v1/webhooks/github", secret)
            ids = [int(github.state.queue_job(REPOSITORY, JOB_LABELS)["id"])
                   for _ in range(jobs)]
            queued_at = [float(github.state.jobs[i]["created_at"]) for i in ids]
            sent = time.time()

            def started() -> list[float]:
                return sorted(t for m in api.state.machines(RUNNERS_APP)
                              if (t := _started_at(m)) is not None)

            try:
                eventually(lambda: len(started()) >= jobs, ideal * 3 + 60,
                           "every runner machine started", interval=0.1)
            except AssertionError as exc:
                # What a failed run saw, so that the report says where the chain stopped.
                answers = [d.status or d.error for d in github.hooks.deliveries]
                states = [m.state for m in api.state.machines(RUNNERS_APP)]
                jits = sum(1 for _, path, _ in list(github.state.requests)
                           if path.endswith("generate-jitconfig"))
                raise AssertionError(
                    f"{exc}: {len(started())}/{jobs} started; webhook answers {answers}; "
                    f"{jits} JIT configs; machines {states}; scaler error "
                    f"{scaler.error!r}") from None
            starts = started()
            github.hooks.wait_idle(10)
            deliveries = [d.status for d in github.hooks.deliveries]
            counters = dict(api.state.requests)
            jit_calls = sum(1 for _, path, _ in list(github.state.requests)
                            if path.endswith("generate-jitconfig"))
    latencies = [s - q for s, q in zip(starts[:jobs], sorted(queued_at), strict=True)]
    last = starts[jobs - 1] - min(queued_at)
    n429 = sum(n for (op, status), n in counters.items() if status == 429)
    note = (f"{jobs} webhooks at once; Fly limits on (create {limit.rate:g}/s, burst "
            f"{limit.burst:g}), realistic boot {REALISTIC.create:g}s")
    rows = [
        row("P6", "github burst: queued webhook -> runner started, p50", "-",
            percentile(latencies, 50), "s", note=note),
        row("P6", "github burst: queued webhook -> runner started, p99", "-",
            percentile(latencies, 99), "s", note=note),
        row("P6", "github burst: last runner machine started",
            f"<= {GOAL_RATIO} x Fly's best", last, "s", baseline=ideal,
            passed=last <= GOAL_RATIO * ideal, note=note),
        row("P6", "github burst: HTTP 429 answers (Fly API)", "0", float(n429), "",
            passed=n429 == 0),
    ]
    details = {
        "jobs": jobs, "latencies_s": latencies, "last_started_s": last, "ideal_s": ideal,
        "webhook_answers": {str(s): deliveries.count(s) for s in set(deliveries)},
        "generate_jitconfig_calls": jit_calls, "sent_at": sent,
        "requests": {f"{op} {status}": n for (op, status), n in sorted(counters.items())},
    }
    return {"rows": rows, "details": details}
