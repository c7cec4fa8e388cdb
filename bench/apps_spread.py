"""P2d: a burst of per-job jobs of 1 s each, create only, over 1 Fly app vs 4 apps.

Fly allows 1 create/s per app (burst 3); a pool with ``apps = [...]`` spreads its creates over
every app's budget. Each variant gets its own local Machines API (sim runtime, Fly's rate limits
on, realistic timings: 3 s from create to started) and Redis keys; the scaler runs normally with
its shared governor. All jobs are enqueued up front; the figure is the time from the enqueue of
the first job until the machine of every job was seen ``started`` (a sim machine runs 1 s, and
the runner's ack is played when it starts, as in P2). The two variants run one after the other
in the same run; the ratio is 1 app's time over 4 apps' time. 429s are counted by the local API.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from bench.common import BenchConfig, ServiceThread, redis_keys, row, scenario_settings
from bench.simjobs import Enqueuer, SimJobs
from scaler.local.server import LocalAPIServer
from scaler.local.testing import eventually
from scaler.loop.machines import META_JOB

__all__ = ["run"]

GOAL_RATIO = 3.5
APPS = 4


class _Started:
    """Polls the local API's store: when each job's machine was first seen started (wall)."""

    def __init__(self, server: LocalAPIServer, apps: list[str]) -> None:
        self.server, self.apps = server, apps
        self.at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-p2d", daemon=True)

    def __enter__(self) -> _Started:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = time.time()
            for app in self.apps:
                for m in self.server.state.machines(app):
                    job = (m.config.get("metadata") or {}).get(META_JOB)
                    if job and job not in self.at and m.state in ("started", "stopping",
                                                                  "stopped", "destroying",
                                                                  "destroyed"):
                        self.at[job] = now


def _variant(cfg: BenchConfig, n_apps: int, jobs: int) -> dict[str, Any]:
    """One burst of ``jobs`` over ``n_apps`` apps; the seconds until all started, and 429s."""
    with (
        redis_keys(cfg, f"p2d{n_apps}") as ns,
        LocalAPIServer(runtime="sim", rate_limits="fly", timings="realistic",
                       sim_run_seconds=1.0) as api,
        api.client() as http,
    ):
        apps = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(n_apps)]
        for app in apps:  # the apps' own creates are rate-limited too: wait, they are not measured
            while (r := http.post("/v1/apps", json={"name": app, "org_slug": "personal"})) \
                    .status_code == 429:
                time.sleep(float(r.headers.get("retry-after", "1")))
            r.raise_for_status()
        setup = dict(api.state.requests)
        where: dict[str, Any] = {"apps": apps} if n_apps > 1 else {"app": apps[0]}
        settings = scenario_settings(
            api_url=api.url, token=api.token, redis_url=cfg.redis_url, prefix=ns,
            scaler={"shared_rate_limits": True},
            pools=[{
                "name": "jobs", "mode": "per-job", **where, "queues": ["p2d"],
                "max_machines": 10_000, "image": "local/bench:latest",
                "cmd": ["python", "-m", "workers.runner"], "boot_timeout": "60s",
                "max_runtime": "120s",
            }],
        )
        enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
        first = time.time()
        for _ in range(jobs):
            enq.send("p2d")
        enq.close()
        sims = [SimJobs(api, app, cfg.redis_url, ns, f"{ns}:fs") for app in apps]
        with ServiceThread(settings), _Started(api, apps) as started:
            for s in sims:
                s.__enter__()
            try:
                eventually(lambda: len(started.at) >= jobs, jobs * 1.5 + 60,
                           "every job's machine started", interval=0.1)
            finally:
                for s in sims:
                    s.__exit__()
            last = max(started.at.values())
        counters = dict(api.state.requests)
        per_app = {app: len(api.state.machines(app)) for app in apps}
    too_many = {
        op: n - setup.get((op, status), 0) for (op, status), n in counters.items()
        if status == 429 and n > setup.get((op, status), 0)
    }
    return {
        "apps": n_apps, "jobs": jobs, "all_started_s": last - first,
        "machines_per_app": list(per_app.values()), "http_429_by_operation": too_many,
    }


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P2d; returns ``{"rows": [...], "details": {...}}``."""
    jobs = cfg.n(30, 500, minimum=16)
    one = _variant(cfg, 1, jobs)
    many = _variant(cfg, APPS, jobs)
    ratio = one["all_started_s"] / many["all_started_s"] if many["all_started_s"] else None
    n429 = sum(one["http_429_by_operation"].values()) + sum(
        many["http_429_by_operation"].values()
    )
    rows = [
        row("P2d", f"burst of {jobs} 1 s per-job jobs, all started: 1 app", "-",
            one["all_started_s"], "s", note="create only, Fly's limits, realistic timings"),
        row("P2d", f"burst of {jobs} 1 s per-job jobs, all started: {APPS} apps", "-",
            many["all_started_s"], "s", baseline=one["all_started_s"],
            note=f"machines per app {many['machines_per_app']}"),
        row("P2d", f"speed-up of {APPS} apps over 1 (same run)", f">= {GOAL_RATIO}x", ratio, "x",
            passed=None if ratio is None else ratio >= GOAL_RATIO),
        row("P2d", "HTTP 429 answers (both variants, all operations)", "0", float(n429), "",
            passed=n429 == 0),
    ]
    return {"rows": rows, "details": {"one_app": one, "many_apps": many, "ratio": ratio}}
