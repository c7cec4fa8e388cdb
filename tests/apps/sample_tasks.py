"""A dramatiq actors module for tests: ``SCALER_ACTORS=tests.apps.sample_tasks``.

The broker comes from env: ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
``FLY_SCALER_NAMESPACE`` (the dramatiq namespace, default ``dramatiq``) and ``FLY_SCALER_PREFIX``
(the scaler prefix for wake-ups). Actors record what they do in Redis keys the caller passes, so a
test can put them under its own prefix. All actors use queue ``SAMPLE_QUEUE`` (env, default
``sample``).
"""

from __future__ import annotations

import os
import time

import dramatiq

from workers.enqueue import redis_broker_from_env

QUEUE = os.environ.get("SAMPLE_QUEUE", "sample")

broker = redis_broker_from_env()

_client = broker.client  # the broker's own connection pool: same Redis, no second client


def _where() -> str:
    return os.environ.get("FLY_MACHINE_ID") or f"pid-{os.getpid()}"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def record(key: str, value: str) -> None:
    """Append ``value@<machine>`` to the list ``key``."""
    _client.rpush(key, f"{value}@{_where()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=50, max_backoff=100)
def flaky(key: str, failures: int) -> None:
    """Fail the first ``failures`` runs (counted in ``key``), then succeed."""
    if _client.incr(key) <= failures:
        raise RuntimeError(f"planned failure for {key}")


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=50, max_backoff=100)
def always_fails(key: str) -> None:
    """Count the run in ``key`` and fail."""
    _client.incr(key)
    raise RuntimeError("always fails")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def sleeper(key: str, seconds: float) -> None:
    """Record ``start``, sleep, record ``done`` (both in the list ``key``)."""
    _client.rpush(key, "start")
    time.sleep(seconds)
    _client.rpush(key, "done")


@dramatiq.actor(queue_name=QUEUE, max_retries=0, machine={"cpus": 2, "memory_mb": 1024})
def sized(key: str) -> None:
    """An actor whose messages ask for a bigger machine."""
    _client.rpush(key, "sized")


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=100)
def too_slow(key: str) -> None:
    """Record ``start``, then outlive its 100 ms time limit (in small sleeps it can interrupt)."""
    _client.rpush(key, "start")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.01)
    _client.rpush(key, "done")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def leave_traces(key: str, secret: str) -> None:
    """Record what the machine's root and home hold (as ``<machine>:<files>``), then leave a file
    in the working directory and ``secret`` in a dotfile of ``HOME`` (no env involved)."""
    root = os.getcwd()
    home = os.environ.get("HOME", root)
    seen = sorted({*os.listdir(root), *os.listdir(home)})
    _client.rpush(key, f"{_where()}:{','.join(seen)}")
    with open(os.path.join(root, "job-output.txt"), "w") as f:
        f.write("left behind")
    with open(os.path.join(home, ".job-secret"), "w") as f:
        f.write(secret)
