"""Enqueueing the chaos actors' jobs: through a plain dramatiq ``RedisBroker`` (an app with no
middleware of ours) or through :func:`workers.enqueue.redis_broker_from_env` (our middleware:
enqueue time stamps and wake-ups)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from workers.enqueue import redis_broker_from_env

__all__ = ["Job", "enqueue", "side_effects"]


@dataclass(frozen=True)
class Job:
    """One enqueued job: its name (what its side effect records) and dramatiq ids."""

    name: str
    redis_message_id: str
    message_id: str


def enqueue(
    redis_url: str, namespace: str, prefix: str, queue: str, actor: str,
    args_per_job: Sequence[Sequence[Any]], *, plain: bool = True,
) -> list[Job]:
    """Enqueue one message of ``actor`` per item of ``args_per_job`` (its first two args are the
    side-effect key and the job name). ``plain``: a bare dramatiq broker, no middleware of ours."""
    if plain:
        broker: RedisBroker = RedisBroker(  # type: ignore[no-untyped-call]
            url=redis_url, namespace=namespace
        )
    else:
        env = {"REDIS_URL": redis_url, "FLY_SCALER_NAMESPACE": namespace,
               "FLY_SCALER_PREFIX": prefix}
        broker = redis_broker_from_env(env, set_default=False)
    try:
        broker.declare_queue(queue)
        out = []
        for args in args_per_job:
            message: dramatiq.Message[Any] = dramatiq.Message(
                queue_name=queue, actor_name=actor, args=tuple(args), kwargs={}, options={}
            )
            sent = broker.enqueue(message)
            out.append(Job(str(args[1]), str(sent.options["redis_message_id"]),
                           str(sent.message_id)))
        return out
    finally:
        broker.close()


def side_effects(client: redis.Redis, key: str) -> Counter[str]:
    """How many times each job's side effect happened (the list ``key`` the actors push to)."""
    return Counter(v.decode() if isinstance(v, bytes) else str(v)
                   for v in client.lrange(key, 0, -1))
