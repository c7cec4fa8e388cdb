"""The control loop: observe -> plan -> act, woken by queue events and by a resync timer.

Level-triggered like a Kubernetes controller: every tick re-reads the truth, so a lost event or a
failed action costs one tick, never correctness. Events only wake the loop early. Only the leader
ticks: a follower neither observes nor acts (its listings would spend the rate budget the replicas
share) and waits to be woken as leader. A tick acts only while it holds a fence; a leader whose
lease lapsed gets none and acts on nothing. Each tick has a deadline: calls that outlive it keep
running in the background and count as in-flight launches next tick (:mod:`scaler.loop.overlay`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.github.launcher import RunnerLauncher
from scaler.jobs.claims import ClaimStore
from scaler.jobs.leader import UNFENCED, Fence, Fenced
from scaler.loop.act import ActReport, Executor
from scaler.loop.governor import RateGovernor
from scaler.loop.machines import caps_of, pool_policy
from scaler.loop.observe import Observer
from scaler.loop.overlay import InFlight, Overlay
from scaler.loop.prometheus import PrometheusReader
from scaler.policy import plan as make_plan
from scaler.policy.types import Observation, Plan
from scaler.telemetry.metrics import Metrics
from scaler.telemetry.recorder import TickRecorder

__all__ = ["Reconciler", "TickResult"]

log = structlog.get_logger(__name__)

QUICK_RETICK_S = 0.1


@dataclass
class TickResult:
    """One tick: what was seen, planned and done."""

    tick_id: str
    trigger: str
    observation: Observation
    plan: Plan
    report: ActReport | None
    seconds: float


class Reconciler:
    """Runs ticks; :meth:`run` loops until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        fly: AsyncFlyClient,
        redis: aioredis.Redis,
        governor: RateGovernor,
        metrics: Metrics,
        *,
        fence: Callable[[], Fence | None] = lambda: UNFENCED,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        prometheus: PrometheusReader | None = None,
        list_interval: float = 0.1,
        runners: RunnerLauncher | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.clock = clock
        self.fence = fence
        self.is_leader = is_leader
        self.claims = ClaimStore(redis, settings.redis.namespace, settings.redis.prefix)
        # The loop's own state, shared explicitly: what act did that listings may not show yet.
        self.overlay = Overlay()
        self.inflight = InFlight()
        self.observer = Observer(
            settings, fly, redis, self.claims, governor, overlay=self.overlay,
            inflight=self.inflight, clock=clock, list_interval=list_interval,
            prometheus=prometheus, ledger=runners.ledger if runners else None,
        )
        self.executor = Executor(
            settings, fly, redis, self.claims, metrics, self.overlay, self.inflight,
            clock=clock, current_fence=fence, runners=runners, wake=self.wake,
            governor=governor,
        )
        self.governor = governor
        self.policies = tuple(pool_policy(p, settings) for p in settings.pools)
        metrics.initialize([p.name for p in settings.pools], self.observer.queues)
        self.caps = caps_of(settings)
        self.last: TickResult | None = None
        self.recorder = TickRecorder(
            settings, redis, metrics, governor, self.policies, self.caps, self.observer
        )
        self._wake = asyncio.Event()
        self._listed_under: int | None = 0  # the fence token of the leadership that listed

    async def aclose(self) -> None:
        """Stop the background work that outlives a tick (the observer's listing refreshes);
        call it before closing the Fly client they use."""
        await self.observer.aclose()

    def wake(self) -> None:
        """Ask for a tick as soon as the current one ends."""
        self._wake.set()

    async def tick(self, trigger: str = "resync") -> TickResult:
        """One observe -> plan -> act pass (act only when leader)."""
        tick_id = uuid.uuid4().hex[:12]
        structlog.contextvars.bind_contextvars(tick=tick_id)
        started = time.monotonic()
        deadline = started + self.settings.scaler.tick_deadline
        self.metrics.ticks.labels(trigger).inc()
        try:
            # A new leadership (another fence token) plans on listings sent from now on: a
            # listing kept from an earlier leadership misses what another leader did meanwhile.
            held = self.fence()
            token = None if held is None else held.token
            if token != self._listed_under:
                self.observer.forget_listings()
                self._listed_under = token
            t0 = time.monotonic()
            obs = await asyncio.wait_for(  # a TimeoutError is counted as an observe error by run
                self.observer.observe(), timeout=self.settings.scaler.tick_deadline,
            )
            self.metrics.stage_duration.labels("observe").observe(time.monotonic() - t0)
            t0 = time.monotonic()
            plan = make_plan(obs, self.policies, self.caps)
            self.metrics.stage_duration.labels("plan").observe(time.monotonic() - t0)
            report = None
            # Read once: the plan is acted on under this fence or not at all. No fence (the
            # lease's deadline passed, even if the elector has not stepped down yet) = not leader.
            fence = self.fence()
            leader = self.is_leader() and fence is not None
            if leader:
                t0 = time.monotonic()
                try:
                    report = await self.executor.execute(plan, fence, deadline)
                except Fenced:
                    log.warning("act refused: another replica is the leader now")
                    self.metrics.tick_errors.labels("fenced").inc()
                self.metrics.stage_duration.labels("act").observe(time.monotonic() - t0)
            self.recorder.record(obs, plan, leader)
            if leader:
                await self.recorder.drain_job_events()
            seconds = time.monotonic() - started
            self.metrics.tick_duration.observe(seconds)
            self.metrics.last_tick.set(self.clock())
            result = TickResult(tick_id, trigger, obs, plan, report, seconds)
            self.last = result
            if leader:
                await self.recorder.publish_status(obs, plan, tick_id, result.seconds)
            return result
        finally:
            structlog.contextvars.unbind_contextvars("tick")

    def _next_delay(self) -> float:
        """The resync interval; sooner while new demand waits on a cap or on rate budget (a slot
        or a token frees up soon; the observer's listing cache and the governor keep such quick
        ticks cheap and within Fly's limits), right after launches (to see them start), or when
        the plan says something waits on time (a claim's grace or backoff ends). Claims waiting
        out a grace or backoff never cause quick ticks: they wait for their time."""
        resync = self.settings.scaler.resync_interval
        last = self.last
        if last is None:
            return 0.0
        delay = resync
        for d in last.plan.decisions:
            if d.outcome == "not_taken" and d.count > 0 and d.kind in ("launch", "create") and (
                d.reason in ("rate_limit", "cap_pool", "cap_app", "cap_global")
            ):
                delay = min(delay, QUICK_RETICK_S)
        if last.report is not None and (last.report.launched or last.report.errors):
            delay = min(delay, 1.0)
        if last.plan.wake_at is not None:
            delay = min(delay, max(QUICK_RETICK_S, last.plan.wake_at - self.clock()))
        return delay

    async def run(self, stop: asyncio.Event, wakeups: AsyncIterator[str] | None = None) -> None:
        """Tick until ``stop`` is set; a SIGTERM-style stop lets the tick in progress finish."""
        waker_task = None
        if wakeups is not None:
            async def pump() -> None:
                async for _queue in wakeups:
                    self._wake.set()
            waker_task = asyncio.create_task(pump())
        trigger = "start"
        try:
            while not stop.is_set():
                if not self.is_leader():
                    # A follower neither acts nor observes: its listings would spend the rate
                    # budget the replicas share. It waits to be woken as leader (or to resync).
                    trigger = await self._wait(stop, self.settings.scaler.resync_interval)
                    continue
                try:
                    await self.tick(trigger)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Only observe's deadline raises TimeoutError here; the act step never does.
                    stage = "observe" if isinstance(exc, TimeoutError) else "tick"
                    self.metrics.tick_errors.labels(stage).inc()
                    log.error("tick failed", stage=stage, error=str(exc),
                              error_type=type(exc).__name__)
                trigger = await self._wait(stop, self._next_delay())
        finally:
            if waker_task is not None:
                waker_task.cancel()
                await asyncio.gather(waker_task, return_exceptions=True)

    async def _wait(self, stop: asyncio.Event, delay: float) -> str:
        if self._wake.is_set():
            self._wake.clear()
            return "event"
        waits = {
            asyncio.create_task(self._wake.wait()): "event",
            asyncio.create_task(stop.wait()): "stop",
        }
        done, pending = await asyncio.wait(
            waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED
        )
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._wake.clear()
        if not done:
            return "resync"
        return waits[next(iter(done))]
