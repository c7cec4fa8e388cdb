"""The scaler's own observe -> plan -> act pieces, in this process, on a clock the caller moves.

:class:`InProcessScaler` assembles what ``scaler run`` assembles (a Redis client, the Fly client
with a rate governor, a leader lease, :class:`scaler.loop.reconciler.Reconciler`) but lets the
caller decide when a tick happens and what time it is. :class:`FakeClock` is real time plus an
offset that only grows when the caller steps it, so every timeout (claim grace, boot timeout,
orphan grace) can be crossed without waiting. :meth:`InProcessScaler.crash` is a process dying:
every task it started is cancelled, nothing is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.jobs.leader import LeaderLease
from scaler.loop.governor import MemoryGovernor
from scaler.loop.reconciler import Reconciler, TickResult
from scaler.telemetry.metrics import Metrics

__all__ = ["FakeClock", "InProcessScaler"]


@dataclass
class FakeClock:
    """Real time plus ``offset`` seconds; :meth:`step` moves it forward."""

    offset: float = 0.0

    def wall(self) -> float:
        """Epoch seconds as the scaler sees them."""
        return time.time() + self.offset

    def monotonic(self) -> float:
        """A monotonic clock that jumps with :meth:`step` (rate buckets, lease deadlines)."""
        return time.monotonic() + self.offset

    def step(self, seconds: float) -> None:
        """Move time forward."""
        self.offset += max(0.0, seconds)


class InProcessScaler:
    """One scaler replica whose ticks the caller runs (on the caller's event loop)."""

    def __init__(
        self,
        settings: Settings,
        clock: FakeClock,
        *,
        redis_timeout: float = 0.5,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.redis = aioredis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
        )
        self.metrics = Metrics()
        self.governor = MemoryGovernor(clock=clock.monotonic)
        assert settings.fly.token is not None
        self.fly = AsyncFlyClient(
            settings.fly.token, base_url=settings.fly.api_url, timeout=settings.fly.timeout,
            governor=self.governor, observer=self.metrics.observe_api_call,
        )
        self.lease = LeaderLease(
            self.redis, f"{settings.redis.prefix}:leader", owner or f"r{uuid.uuid4().hex[:8]}",
            settings.scaler.leader_ttl, clock=clock.monotonic,
        )
        self.reconciler = Reconciler(
            settings, self.fly, self.redis, self.governor, self.metrics,
            fence=lambda: self.lease.fence,
            is_leader=lambda: self.lease.fence is not None,
            clock=clock.wall,
        )
        self.tick_errors = 0
        self.last_error: str | None = None

    async def tick(self) -> TickResult | None:
        """Renew (or take) the lease, then one tick; a failed tick is counted, as ``run`` does."""
        try:
            if self.lease.fence is None:
                await self.lease.try_acquire()
            else:
                await self.lease.renew()
        except Exception as exc:
            self.tick_errors += 1
            self.last_error = f"lease: {type(exc).__name__}: {exc}"
        try:
            return await self.reconciler.tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.tick_errors += 1
            self.last_error = f"tick: {type(exc).__name__}: {exc}"
            return None

    async def crash(self) -> None:
        """Die: cancel every task on this loop but the caller's, close the connections, release
        nothing (the lease stays in Redis until its TTL)."""
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close()

    async def stop(self) -> None:
        """Shut down as on SIGTERM: wait (bounded) for calls in flight, release the lease."""
        with contextlib.suppress(Exception):
            await self.reconciler.executor.drain(wait_s=5)
        with contextlib.suppress(Exception):
            await self.lease.release()
        await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.reconciler.aclose()  # before the Fly client its background listings use
        with contextlib.suppress(Exception):
            await self.fly.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
