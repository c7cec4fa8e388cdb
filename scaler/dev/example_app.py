"""The example app of ``scaler dev``: two dramatiq actors, and the actors module its machines run
(``SCALER_ACTORS=scaler.dev.example_app``).

- ``thumbnail(job_id)`` on queue ``jobs`` (the per-job pool): one dedicated machine per message;
  some are sent with :func:`workers.enqueue.send_with_machine` for a 2-CPU, 512 MB machine.
- ``send_email(job_id)`` on queue ``default`` (the worker pool): ordinary dramatiq workers that
  scale to zero.

Each run is counted in Redis under ``{FLY_SCALER_PREFIX}:example:`` (a hash job id -> runs, plus
totals), so ``scaler dev`` can prove that every job ran exactly once.

Configured from env when imported: ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
``FLY_SCALER_NAMESPACE`` (the dramatiq namespace) and ``FLY_SCALER_PREFIX`` (the scaler prefix,
for wake-ups and the result keys). :func:`build` makes the same actors on another broker (the
producer side of ``scaler dev``).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from scaler.jobs.enqueue import ScalerMiddleware

__all__ = [
    "ExampleApp",
    "ResultKeys",
    "build",
    "send_email",
    "thumbnail",
]

JOBS_QUEUE = "jobs"
WORKERS_QUEUE = "default"


@dataclass(frozen=True)
class ResultKeys:
    """Where runs are counted: ``runs`` (hash job id -> count), ``done`` and ``duplicates``."""

    prefix: str

    @property
    def runs(self) -> str:
        """Hash: job id -> how many times it ran."""
        return f"{self.prefix}:example:runs"

    @property
    def done(self) -> str:
        """Counter: runs completed (every run, duplicates included)."""
        return f"{self.prefix}:example:done"

    @property
    def duplicates(self) -> str:
        """Counter: runs of a job that had already run."""
        return f"{self.prefix}:example:duplicates"


_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return _client


def record_run(client: redis.Redis, keys: ResultKeys, job_id: str) -> int:
    """Count one run of ``job_id``; returns how many times it has run, this one included."""
    pipe = client.pipeline()
    pipe.hincrby(keys.runs, job_id, 1)
    pipe.incr(keys.done)
    runs = int(pipe.execute()[0])
    if runs > 1:
        client.incr(keys.duplicates)
    return runs


def _keys() -> ResultKeys:
    return ResultKeys(os.environ.get("FLY_SCALER_PREFIX", "fly-scaler"))


def _thumbnail(job_id: str) -> None:
    """Pretend to render a thumbnail (0.2-0.5 s), then record the run."""
    time.sleep(random.uniform(0.2, 0.5))
    record_run(_redis(), _keys(), job_id)


def _send_email(job_id: str) -> None:
    """Pretend to send an email (0.05-0.2 s), then record the run."""
    time.sleep(random.uniform(0.05, 0.2))
    record_run(_redis(), _keys(), job_id)


@dataclass(frozen=True)
class ExampleApp:
    """The broker and the two actors declared on it."""

    broker: RedisBroker
    thumbnail: dramatiq.Actor[[str], None]
    send_email: dramatiq.Actor[[str], None]


def build(redis_url: str, namespace: str, prefix: str) -> ExampleApp:
    """A RedisBroker in ``namespace`` with :class:`ScalerMiddleware`, and the actors on it."""
    broker = RedisBroker(url=redis_url, namespace=namespace)  # type: ignore[no-untyped-call]
    broker.add_middleware(ScalerMiddleware(prefix=prefix))
    jobs = dramatiq.actor(actor_name="thumbnail", queue_name=JOBS_QUEUE, broker=broker,
                          max_retries=0)
    emails = dramatiq.actor(actor_name="send_email", queue_name=WORKERS_QUEUE, broker=broker,
                            max_retries=0)
    return ExampleApp(broker=broker, thumbnail=jobs(_thumbnail), send_email=emails(_send_email))


_app = build(
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get("FLY_SCALER_NAMESPACE", "dramatiq"),
    os.environ.get("FLY_SCALER_PREFIX", "fly-scaler"),
)
dramatiq.set_broker(_app.broker)
thumbnail = _app.thumbnail
send_email = _app.send_email
