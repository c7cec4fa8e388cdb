"""Demo actors for deploy/docker-compose.yml (mounted at /app in the local-api container, where
the machines run). Enqueue through the scaler's HTTP API, e.g.

    curl -X POST http://127.0.0.1:9091/v1/queues/jobs/messages \
      -H "Authorization: Bearer local-enqueue-token" -H "Content-Type: application/json" \
      -d '{"actor": "build", "args": [5]}'
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

_url = os.environ.get("REDIS_URL", "redis://redis:6379/0")
dramatiq.set_broker(RedisBroker(url=_url))  # type: ignore[no-untyped-call]


@dramatiq.actor(queue_name="jobs", max_retries=1)
def build(seconds: float = 5.0) -> None:
    """A per-job task: one dedicated machine runs it, then the machine is gone."""
    time.sleep(seconds)


@dramatiq.actor(queue_name="default")
def send_email(to: str = "someone@example.com") -> None:
    """A worker-pool task: drained by a fleet that scales to zero when idle."""
    time.sleep(0.2)
    print(f"sent an email to {to}")
