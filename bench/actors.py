"""Actors the benchmarks run in real processes: ``SCALER_ACTORS=bench.actors``.

The broker comes from env like an app's would: ``REDIS_URL``, ``FLY_SCALER_NAMESPACE`` (dramatiq
namespace) and ``FLY_SCALER_PREFIX``; every actor is on queue ``BENCH_QUEUE``. Each records
``"<event> <epoch seconds> <machine or pid>"`` in the Redis list it is given, so the harness can
time a process from exec to the job function.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis

from workers.enqueue import redis_broker_from_env

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")

broker = redis_broker_from_env()

_client = redis.Redis.from_url(REDIS_URL)


def _where() -> str:
    return os.environ.get("FLY_MACHINE_ID") or f"pid-{os.getpid()}"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def entered(key: str) -> None:
    """Record the time the job function was entered."""
    _client.rpush(key, f"enter {time.time()!r} {_where()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def work(key: str, seconds: float) -> None:
    """Record entry, sleep ``seconds`` (the job), record the end."""
    _client.rpush(key, f"enter {time.time()!r} {_where()}")
    time.sleep(seconds)
    _client.rpush(key, f"done {time.time()!r} {_where()}")

