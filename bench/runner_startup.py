"""P4 runner start-up: process exec -> job function entered.

Two ways to run one job, each timed from just before ``Popen`` (wall clock) to the time the job
function (:func:`bench.actors.entered`) wrote down, medians over several repetitions:

- ``python -m workers.runner`` in bound mode, on a real claim made by the scaler's
  :class:`~scaler.jobs.claims.ClaimStore` (what a per-job machine runs);
- the floor: ``python -c "import dramatiq"`` (until the interpreter has imported dramatiq).

(A row comparing dramatiq's own CLI with the runner was retired: dramatiq 2.2's CLI starts fast,
so the comparison measured nothing the runner controls.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from bench.common import ROOT, BenchConfig, median, records, redis_keys, row
from bench.simjobs import Enqueuer
from scaler.jobs.claims import ClaimStore
from scaler.jobs.leader import UNFENCED

__all__ = ["run"]

GOAL_VS_IMPORT = 2.0
QUEUE = "p4"


def _env(cfg: BenchConfig, ns: str) -> dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": cfg.redis_url,
        "FLY_SCALER_NAMESPACE": ns, "FLY_SCALER_PREFIX": f"{ns}:fs", "BENCH_QUEUE": QUEUE,
        "SCALER_ACTORS": "bench.actors", "dramatiq_queue_prefetch": "1",
    }


def _entered(client: redis.Redis, key: str) -> float | None:
    got = [at for event, at, _ in records(client, key) if event == "enter"]
    return got[0] if got else None


async def _claim(cfg: BenchConfig, ns: str, job: str) -> None:
    client = aioredis.Redis.from_url(cfg.redis_url)
    try:
        got = await ClaimStore(client, ns, f"{ns}:fs").claim(
            QUEUE, "jobs", 1, int(time.time() * 1000), UNFENCED
        )
    finally:
        await client.aclose()
    if [c.redis_message_id for c in got] != [job]:
        raise RuntimeError(f"expected to claim {job}, got {[c.redis_message_id for c in got]}")


def _runner(cfg: BenchConfig, ns: str, client: redis.Redis, enq: Enqueuer, i: int) -> float:
    key = f"{ns}:runner:{i}"
    job, _ = enq.send(QUEUE, "entered", key)
    asyncio.run(_claim(cfg, ns, job))
    env = {**_env(cfg, ns), "FLY_SCALER_QUEUE": QUEUE, "FLY_SCALER_MESSAGE": job}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "workers.runner"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"runner exited {proc.returncode}: {proc.stderr[-1000:]}")
    at = _entered(client, key)
    if at is None:
        raise RuntimeError("the runner exited 0 but the job never ran")
    return at - t0


def _bare(cfg: BenchConfig, ns: str) -> float:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", "import dramatiq, time; print(repr(time.time()))"],
        cwd=ROOT, env=_env(cfg, ns), capture_output=True, text=True, timeout=60, check=True,
    )
    return float(proc.stdout.strip()) - t0


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run P4; returns ``{"rows": [...], "details": {...}}``."""
    reps = cfg.n(5, 15, minimum=1)
    runner: list[float] = []
    bare: list[float] = []
    with redis_keys(cfg, "p4") as ns:
        client = redis.Redis.from_url(cfg.redis_url)
        enq = Enqueuer(cfg.redis_url, ns, f"{ns}:fs")
        try:
            for i in range(reps):  # interleaved, so drift on a noisy machine hits both
                bare.append(_bare(cfg, ns) * 1000)
                runner.append(_runner(cfg, ns, client, enq, i) * 1000)
        finally:
            enq.close()
            client.close()
    r, b = median(runner), median(bare)
    assert r is not None and b is not None
    rows = [
        row("P4", "runner exec -> job entered vs bare import", f"<= {GOAL_VS_IMPORT:g} x import",
            r, "ms", baseline=b, passed=r <= GOAL_VS_IMPORT * b,
            note=f"median of {reps}; baseline: python -c 'import dramatiq'"),
    ]
    details = {"reps": reps, "runner_ms": runner, "bare_import_ms": bare}
    return {"rows": rows, "details": details}
