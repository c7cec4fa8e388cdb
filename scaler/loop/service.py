"""The scaler process assembled from its settings: Redis, the Fly client, the governor, the leader
lease, the promoter, wake-ups, the reconciler and the HTTP port. Used by ``scaler run``,
``scaler dev`` and the end-to-end tests, so they all run the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import httpx
import redis.asyncio as aioredis
import structlog
import uvicorn

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.github.runtime import GitHubRuntime
from scaler.http.app import QueueInfo, create_http_app
from scaler.jobs.keys import leader_key
from scaler.jobs.leader import LeaderElector, LeaderLease
from scaler.jobs.promoter import Promoter
from scaler.loop.governor import make_governor
from scaler.loop.prometheus import PrometheusReader
from scaler.loop.reconciler import Reconciler
from scaler.loop.wake import Waker
from scaler.telemetry.metrics import Metrics

__all__ = ["Service", "StartupError"]

log = structlog.get_logger(__name__)

REDIS_TIMEOUT_S = 5.0


class StartupError(RuntimeError):
    """The service cannot start (a port in use): one line naming the setting and the fix."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Service:
    """One scaler replica. ``await run(stop)`` until ``stop`` is set, then everything is closed.

    ``fly_transport`` lets tests and ``scaler dev`` talk to an in-process local API; ``http`` turns
    the HTTP port off (tests that do not need it); ``http_port=0`` picks a free port.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        fly_transport: httpx.AsyncBaseTransport | None = None,
        http: bool = True,
        http_port: int | None = None,
        owner: str | None = None,
        promoter: bool = True,
        list_interval: float = 0.1,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        # Every Redis call has a deadline: a hung Redis must fail a tick ("unknown"), not hang it.
        self.redis = aioredis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        # Pub/sub waits on its own connection, with its own read timeouts.
        self.pubsub_redis = aioredis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        self.governor = make_governor(
            settings.scaler.shared_rate_limits, self.redis, settings.redis.prefix,
            on_wait=lambda action, s: self.metrics.governor_wait.labels(action).observe(s),
        )
        self.fly = AsyncFlyClient(
            settings.fly.token,
            transport=fly_transport,
            base_url=settings.fly.api_url,
            timeout=settings.fly.timeout,
            governor=self.governor,
            observer=self.metrics.observe_api_call,
        )
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = LeaderLease(
            self.redis, leader_key(settings.redis.prefix), self.owner, settings.scaler.leader_ttl
        )
        self.elector = LeaderElector(self.lease, on_change=self._leader_changed)
        self.prometheus = (
            PrometheusReader(str(settings.prometheus.url), timeout=settings.prometheus.timeout)
            if settings.prometheus.url else None
        )
        self.github = (GitHubRuntime(settings, self.redis, self.metrics)
                       if any(p.is_github for p in settings.pools) else None)
        self.reconciler = Reconciler(
            settings, self.fly, self.redis, self.governor, self.metrics,
            fence=lambda: self.elector.fence,
            is_leader=self.elector.is_leader.is_set,
            prometheus=self.prometheus,
            list_interval=list_interval,
            runners=self.github.launcher if self.github else None,
        )
        queues = tuple(dict.fromkeys(q for p in settings.pools for q in p.queues))
        self.queues = queues
        self.promoter = (
            Promoter(settings.redis.url, settings.redis.namespace, queues,
                     prefix=settings.redis.prefix)
            if promoter and queues else None
        )
        self._http_enabled = http
        self._http_port = settings.http.port if http_port is None else http_port
        self.http_server: uvicorn.Server | None = None
        self.http_port: int | None = None
        self.ready = asyncio.Event()

    async def _leader_changed(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        self.metrics.leader_changes.labels("gained" if leading else "lost").inc()
        log.info("leadership", leader=leading, owner=self.owner)
        if leading:
            self.reconciler.wake()
        else:
            # Creates still running (or retrying 429s) were sent under the lost fence: they stop
            # now, before the next leader can act on the same claims.
            await self.reconciler.executor.abandon()

    def _readiness(self) -> tuple[bool, str]:
        if self.elector.last_error is not None:
            return False, f"redis unreachable: {self.elector.last_error}"
        if not self.elector.is_leader.is_set():
            return True, "follower: standing by"
        last = self.reconciler.last
        if last is None:
            return False, "no tick yet"
        if "redis" in self.reconciler.observer.unknown:
            return False, "redis unreachable"
        observer = self.reconciler.observer
        if self.github is not None and self.github.problem is not None:
            return False, self.github.problem
        if observer.misconfigured:
            # Not a blip: a refused token or a missing app stays until the operator acts.
            return False, "; ".join(observer.unknown[f"fly:{a}"]
                                    for a in sorted(observer.misconfigured))
        return True, "ok"

    def _http_app_queues(self) -> dict[str, QueueInfo]:
        out: dict[str, QueueInfo] = {}
        for pool in self.settings.pools:
            actors = frozenset(pool.http_actors)
            if actors:
                for q in pool.queues:
                    out[q] = QueueInfo(actors=actors)
        return out

    def _bind_http(self) -> socket.socket:
        """Bind the HTTP port now, so that a port in use stops the start with its name instead
        of a replica that leads with no /metrics, /healthz or enqueue API."""
        host, port = self.settings.http.host, self._http_port
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise StartupError(
                f"http.port: cannot listen on {host}:{port}: {exc.strerror or exc}; stop what "
                "uses it or set another [http] port"
            ) from None
        # Listening now: a request sent as soon as the port is known waits in the backlog until
        # the server accepts it, instead of being refused.
        sock.listen(2048)
        self.http_port = int(sock.getsockname()[1])
        return sock

    async def _serve_http(self, sock: socket.socket) -> None:
        app = create_http_app(
            metrics=self.metrics,
            redis=self.redis,
            namespace=self.settings.redis.namespace,
            prefix=self.settings.redis.prefix,
            queues=self._http_app_queues(),
            tokens=self.settings.http.enqueue_tokens,
            ready=self._readiness,
            github_webhook=self.github.webhook.handle if self.github else None,
        )
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.http_server = _Server(config)
        await self.http_server.serve(sockets=[sock])

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: the tick in progress finishes, then everything closes."""
        tasks: list[asyncio.Task[None]] = []
        log.info("scaler starting", owner=self.owner, config=self.settings.redacted())
        try:
            sock = self._bind_http() if self._http_enabled else None
            if self.promoter is not None:
                await asyncio.to_thread(self.promoter.start)
            tasks.append(asyncio.create_task(self.elector.run(), name="leader"))
            if self.github is not None:
                tasks.append(asyncio.create_task(
                    self.github.run_resync(self.elector.is_leader.is_set, stop),
                    name="github-resync"))
            if sock is not None:
                tasks.append(asyncio.create_task(self._serve_http(sock), name="http"))
            if self.settings.record.enabled:
                tasks.append(asyncio.create_task(self._record(stop), name="record"))
            wakeups = None
            if self.settings.scaler.event_wakeups:
                wakeups = aiter(Waker(self.pubsub_redis, self.settings.redis.namespace,
                                      self.settings.redis.prefix, self.queues))
            self.ready.set()
            await self.reconciler.run(stop, wakeups)
        finally:
            await self.close(tasks)

    async def _record(self, stop: asyncio.Event) -> None:
        """``[record] enabled``: write the trace beside the loop, on what it already reads (a
        reader: it never changes Redis or Fly; docs/replay.md)."""
        from scaler.replay.recorder import recorder_for

        recorder = recorder_for(self.settings, self.redis, self.fly)
        try:
            await recorder.run(stop)
        finally:
            recorder.writer.close()

    async def close(self, tasks: list[asyncio.Task[None]] | None = None) -> None:
        """Stop the background parts and release the lease (idempotent).

        In-flight creates are drained first, while the lease is still held and renewed, so their
        machines are recorded in their claims; what is still running after the drain is abandoned
        before the lease is released, so the next leader never races a create of ours."""
        await self.reconciler.executor.drain(wait_s=10)
        self.elector.stop()
        if self.http_server is not None:
            self.http_server.should_exit = True
        for t in tasks or ():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, timeout=5)
        if self.promoter is not None:
            await asyncio.to_thread(self.promoter.stop)
        with contextlib.suppress(Exception):
            await self.lease.release()
        await self.reconciler.aclose()  # before the Fly client its background listings use
        await self.fly.aclose()
        if self.github is not None:
            await self.github.aclose()
        if self.prometheus is not None:
            await self.prometheus.aclose()
        await self.redis.aclose()
        await self.pubsub_redis.aclose()
