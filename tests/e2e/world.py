"""What every end-to-end test starts from: a fresh app on a local Machines API, a queue of its own,
and the Redis namespace and prefix of the test, with the harness helpers bound to them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx
import redis

from scaler.config import Settings
from scaler.local.server import LocalAPIServer
from tests.scaler_harness import create_app, enqueue, fly_client, machines, make_settings
from tests.scaler_harness import redis_client as _redis_client


@dataclass
class World:
    """One test's app, queue and Redis keys (``ns`` for dramatiq, ``prefix`` for the scaler)."""

    server: LocalAPIServer
    api: httpx.Client
    app: str
    queue: str
    redis_url: str
    ns: str
    prefix: str
    r: redis.Redis

    def settings(self, **kw: Any) -> Settings:
        """:func:`~tests.scaler_harness.make_settings` for this world; ``kw`` as there."""
        return make_settings(
            api_url=self.server.url, token=self.server.token, redis_url=self.redis_url,
            namespace=self.ns, prefix=self.prefix, app=self.app, queue=self.queue, **kw,
        )

    def enqueue(self, actor: str, *args: Any, **options: Any) -> str:
        """Enqueue one sample-actor message on this world's queue; returns its message_id."""
        return enqueue(self.redis_url, self.ns, self.prefix, self.queue, actor, *args, **options)

    def values(self, key: str) -> list[str]:
        """The list at ``key``, where the sample actors write what they did."""
        return cast(list[str], self.r.lrange(key, 0, -1))  # the client decodes replies

    def machines(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every machine of this world's app."""
        return machines(self.api, self.app, include_deleted)

    def close(self) -> None:
        self.api.close()
        self.r.close()


def open_world(
    server: LocalAPIServer, redis_url: str, redis_prefix: str,
    create: Callable[[httpx.Client], str] = create_app,
) -> World:
    """A world on ``server``; ``create`` makes the app (a faulty server needs retries)."""
    api = fly_client(server.url, server.token)
    return World(
        server=server, api=api, app=create(api), queue=f"q{uuid.uuid4().hex[:8]}",
        redis_url=redis_url, ns=redis_prefix, prefix=f"{redis_prefix}fs",
        r=_redis_client(redis_url),
    )
