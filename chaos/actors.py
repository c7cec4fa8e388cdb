"""The chaos suite's app: a plain dramatiq ``RedisBroker`` with dramatiq's own middleware only (none
of ours), as an app that never heard of fly-scaler would have. Machines load it with
``SCALER_ACTORS=chaos.actors``.

Env: ``REDIS_URL``, ``FLY_SCALER_NAMESPACE`` (the dramatiq namespace), ``CHAOS_QUEUE`` (every
actor's queue), ``CHAOS_EFFECTS_URL`` (the Redis side effects go to; default ``REDIS_URL``, so a
scenario that stops the app's Redis still reads them). Each actor takes the Redis list ``key`` its
side effects go to and the job's name:
``RPUSH key job`` once the job's work is done is *the* side effect the suite counts ("ran exactly
once"); ``RPUSH key:start job`` marks each attempt that began.
"""

from __future__ import annotations

import os
import signal
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

QUEUE = os.environ.get("CHAOS_QUEUE", "chaos")

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ.get("FLY_SCALER_NAMESPACE", "dramatiq"),
)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(
    os.environ.get("CHAOS_EFFECTS_URL") or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
)


def _began(key: str, job: str) -> int:
    """Mark an attempt; the attempt number of this job (1 for the first)."""
    _client.rpush(f"{key}:start", job)
    return int(_client.incr(f"{key}:attempts:{job}"))


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def record(key: str, job: str) -> None:
    """The job's side effect, at once."""
    _began(key, job)
    _client.rpush(key, job)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def work(key: str, job: str, seconds: float) -> None:
    """Work ``seconds``, then the side effect."""
    _began(key, job)
    time.sleep(seconds)
    _client.rpush(key, job)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def placed(key: str, job: str, seconds: float) -> None:
    """As :func:`work`, and first ``RPUSH key:at job@machine`` (``FLY_MACHINE_ID``): where each
    attempt ran, for scenarios about which machine (a warm slot, an app) a job got."""
    _began(key, job)
    _client.rpush(f"{key}:at", f"{job}@{os.environ.get('FLY_MACHINE_ID', '')}")
    time.sleep(seconds)
    _client.rpush(key, job)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def die_first(key: str, job: str, deaths: int, seconds: float) -> None:
    """The machine dies (SIGKILL: exit 137) ``seconds`` into each of the first ``deaths``
    attempts; a later attempt does the side effect."""
    if _began(key, job) <= deaths:
        time.sleep(seconds)
        os.kill(os.getpid(), signal.SIGKILL)
    _client.rpush(key, job)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=24 * 3600 * 1000)
def hang(key: str, job: str) -> None:
    """Start and never end (only a destroy ends it)."""
    _began(key, job)
    while True:
        time.sleep(1)
