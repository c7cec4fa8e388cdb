"""P5 end to end: N jobs of 100 ms through the whole system on the process runtime (real
``python -m workers.runner`` processes), makespan = last job done - first enqueue.

- per-job pool capped at 20 machines; the ideal is ``ceil(jobs / cap) * (job time + machine
  start)``, machine start measured in the same run as the median of (job entered - create
  received by the local API);
- worker pool (5 machines x 4 jobs each = 20 concurrent) against a plain dramatiq worker process
  with the same concurrency (``dramatiq bench.actors --processes 1 --threads 20``), started after
  the jobs are enqueued.

The local API runs in its own process (``scaler local-api``), as Fly is not in the scaler's
process, with rate limits OFF, and the scaler's governor never waits: at Fly's create
limit (1/s per app) the makespan would measure the rate limit, which P2 measures already.

Where a cap slot's turnover goes is reported with the per-job row (``details.per_job.turnover``,
medians over the machines, from the local API's machine events and the jobs' own records):
create -> started, started -> job entered (the runner's start-up), the job, job done -> exit
(stopped), exit -> destroyed, and destroyed -> the next create (the k-th destroyed machine
against the (cap + k)-th create: the cap is full, so each create waits for one machine to go).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import redis

from bench.common import (
    ROOT,
    BenchConfig,
    ServiceThread,
    UnlimitedGovernor,
    api_token,
    local_api_process,
    median,
    records,
    redis_keys,
    row,
    scenario_settings,
    stop_group,
)
from bench.simjobs import Enqueuer
from scaler.local.testing import eventually

__all__ = ["run"]

GOAL_VS_IDEAL = 1.3
JOB_S = 0.1
CAP = 20
QUEUE = "p5"


def _env(cfg: BenchConfig, ns: str) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "REDIS_URL": cfg.redis_url, "BENCH_QUEUE": QUEUE,
            "SCALER_ACTORS": "bench.actors", "FLY_SCALER_NAMESPACE": ns,
            "FLY_SCALER_PREFIX": f"{ns}:fs"}


def _pool(cfg: BenchConfig, ns: str, app: str, mode: str) -> dict[str, Any]:
    common = {"app": app, "queues": [QUEUE], "image": "local/bench:latest",
              "env": _env(cfg, ns)}
    if mode == "per-job":
        return {**common, "name": "jobs", "mode": "per-job", "max_machines": CAP,
                "cmd": ["python", "-m", "workers.runner"], "boot_timeout": "30s",
                "max_runtime": "60s"}
    return {**common, "name": "workers", "mode": "worker", "max_machines": CAP // 4,
            "jobs_per_machine": 4, "idle_timeout": "2s", "min_lifetime": "0s",
            "cmd": ["python", "-m", "workers.runner", "--drain"]}


def _through_scaler(cfg: BenchConfig, mode: str, jobs: int, workdir: Path) -> dict[str, Any]:
    with (
        redis_keys(cfg, "p5") as ns,
        local_api_process(workdir / mode) as http,
    ):
        app = f"bench-{uuid.uuid4().hex[:8]}"
        http.post("/v1/apps", json={"name": app, "org_slug": "personal"}).raise_for_status()
        settings = scenario_settings(api_url=str(http.base_url), token=api_token(http),
                                     redis_url=cfg.redis_url, prefix=ns,
                                     pools=[_pool(cfg, ns, app, mode)])
        client = redis.Redis.from_url(cfg.redis_url)
        enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
        key = f"{ns}:out"
        try:
            with (
                mock.patch("scaler.loop.service.make_governor",
                           lambda *a, **k: UnlimitedGovernor()),
                ServiceThread(settings),
            ):
                first = time.time()
                for _ in range(jobs):
                    enq.send(QUEUE, "work", key, JOB_S)
                eventually(lambda: client.llen(key) >= 2 * jobs, 120 + jobs, "every job done",
                           interval=0.02)
            recs = records(client, key)
            listed = http.get(f"/v1/apps/{app}/machines", params={"include_deleted": True})
            created = {m["id"]: _launched_at(m) for m in listed.json()}
        finally:
            enq.close()
            client.close()
    done = [at for event, at, _ in recs if event == "done"]
    starts = [at - launched for event, at, w in recs
              if event == "enter" and (launched := created.get(w)) is not None]
    return {"jobs": jobs, "makespan_s": max(done) - first,
            "machines": len(created), "machine_start_s": median(starts),
            "turnover": _turnover(listed.json(), recs) if mode == "per-job" else {}}


def _turnover(
    machines: list[dict[str, Any]], recs: list[tuple[str, float, str]]
) -> dict[str, float | None]:
    """Medians (s) of each step of a cap slot's turnover (see the module docstring)."""
    enter = {w: at for event, at, w in recs if event == "enter"}
    done = {w: at for event, at, w in recs if event == "done"}
    steps: dict[str, list[float]] = {k: [] for k in (
        "create_to_started", "started_to_entered", "job", "done_to_exit", "exit_to_destroyed")}
    creates, destroys = [], []
    for m in machines:
        first: dict[tuple[str, str], float] = {}
        for e in sorted(m.get("events") or (), key=lambda e: e["timestamp"]):
            first.setdefault((e["type"], e["status"]), float(e["timestamp"]) / 1000.0)
        launch, started = first.get(("launch", "created")), first.get(("start", "started"))
        stopped, gone = first.get(("exit", "stopped")), first.get(("destroy", "destroyed"))
        if launch is not None:
            creates.append(launch)
        if gone is not None:
            destroys.append(gone)
        mid = m["id"]
        if (launch is None or started is None or stopped is None or gone is None
                or mid not in enter or mid not in done):
            continue
        steps["create_to_started"].append(started - launch)
        steps["started_to_entered"].append(enter[mid] - started)
        steps["job"].append(done[mid] - enter[mid])
        steps["done_to_exit"].append(stopped - done[mid])
        steps["exit_to_destroyed"].append(gone - stopped)
    creates.sort()
    destroys.sort()
    out = {k: median(v) for k, v in steps.items()}
    out["destroyed_to_next_create"] = median(
        [c - d for d, c in zip(destroys, creates[CAP:], strict=False)])
    return out


def _launched_at(machine: dict[str, Any]) -> float | None:
    """When the API received the create: the machine's ``launch`` event (ms timestamps)."""
    for event in machine.get("events") or ():
        if event.get("type") == "launch":
            return float(event["timestamp"]) / 1000.0
    return None


def _plain_worker(cfg: BenchConfig, jobs: int) -> dict[str, Any]:
    with redis_keys(cfg, "p5w") as ns:
        client = redis.Redis.from_url(cfg.redis_url)
        enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
        key = f"{ns}:out"
        try:
            first = time.time()
            for _ in range(jobs):
                enq.send(QUEUE, "work", key, JOB_S)
            proc = subprocess.Popen(
                [sys.executable, "-m", "dramatiq", "bench.actors", "--processes", "1",
                 "--threads", str(CAP)],
                cwd=ROOT, env={**os.environ, **_env(cfg, ns)}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
            try:
                eventually(lambda: client.llen(key) >= 2 * jobs, 60 + jobs, "every job done")
            finally:
                stop_group(proc)
            recs = records(client, key)
        finally:
            enq.close()
            client.close()
    done = [at for event, at, _ in recs if event == "done"]
    return {"jobs": jobs, "makespan_s": max(done) - first}


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P5; returns ``{"rows": [...], "details": {...}}``."""
    import tempfile

    jobs = cfg.n(40, 200, minimum=2)
    with tempfile.TemporaryDirectory(prefix="bench-p5-") as tmp:
        per_job = _through_scaler(cfg, "per-job", jobs, Path(tmp))
        pool = _through_scaler(cfg, "worker", jobs, Path(tmp))
    plain = _plain_worker(cfg, jobs)
    start = per_job["machine_start_s"] or 0.0
    ideal = math.ceil(jobs / CAP) * (JOB_S + start)
    turn = per_job["turnover"]
    lost = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in turn.items()
                     if v is not None and k in ("done_to_exit", "destroyed_to_next_create"))
    rows = [
        row("P5", f"per-job makespan, {jobs} x 100 ms jobs, cap {CAP}",
            f"<= {GOAL_VS_IDEAL:g} x ideal", per_job["makespan_s"], "s", baseline=ideal,
            passed=per_job["makespan_s"] <= GOAL_VS_IDEAL * ideal,
            note=f"ideal uses measured machine start {start * 1000:.0f} ms; rate limits off; "
                 f"per turnover (medians): {lost}"),
        row("P5", f"worker-pool makespan, {jobs} jobs, 5 x 4 threads", "-",
            pool["makespan_s"], "s", baseline=plain["makespan_s"],
            note="baseline: plain dramatiq worker, 20 threads; rate limits off"),
    ]
    details = {"per_job": per_job, "worker_pool": pool, "plain_dramatiq": plain,
               "ideal_s": ideal, "cap": CAP, "job_s": JOB_S}
    return {"rows": rows, "details": details}
