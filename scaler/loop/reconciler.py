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
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.jobs.claims import ClaimStore
from scaler.jobs.keys import job_events_key, status_key
from scaler.jobs.leader import UNFENCED, Fence, Fenced
from scaler.loop.act import Actor, ActReport
from scaler.loop.governor import RateGovernor
from scaler.loop.machines import pool_policy
from scaler.loop.observe import Observer
from scaler.loop.overlay import InFlight, Overlay
from scaler.loop.prometheus import PrometheusReader
from scaler.policy import plan as make_plan
from scaler.policy.caps import Ledger
from scaler.policy.types import Caps, Decision, Observation, Plan
from scaler.telemetry.costs import price_per_second
from scaler.telemetry.metrics import Metrics

__all__ = ["Reconciler", "TickResult"]

log = structlog.get_logger(__name__)

STATUS_TTL_S = 120
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
            prometheus=prometheus,
        )
        self.actor = Actor(
            settings, fly, redis, self.claims, metrics, self.overlay, self.inflight,
            clock=clock, current_fence=fence,
        )
        self.governor = governor
        self.policies = tuple(pool_policy(p, settings) for p in settings.pools)
        metrics.initialize([p.name for p in settings.pools], self.observer.queues)
        self.caps = Caps(
            global_max=settings.scaler.max_machines,
            per_app={
                app: cap for app in {p.app for p in settings.pools}
                if (cap := settings.app_cap(app)) is not None
            },
        )
        self.last: TickResult | None = None
        self._last_logged: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._cost_seen: dict[str, float] = {}
        self._wake = asyncio.Event()

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
                    report = await self.actor.execute(
                        plan, self.observer.claim_objects, fence, deadline
                    )
                except Fenced:
                    log.warning("act refused: another replica is the leader now")
                    self.metrics.tick_errors.labels("fenced").inc()
                self.metrics.stage_duration.labels("act").observe(time.monotonic() - t0)
            self._record(obs, plan, leader)
            if leader:
                await self._drain_job_events()
            seconds = time.monotonic() - started
            self.metrics.tick_duration.observe(seconds)
            self.metrics.last_tick.set(self.clock())
            result = TickResult(tick_id, trigger, obs, plan, report, seconds)
            self.last = result
            await self._publish_status(result, leader)
            return result
        finally:
            structlog.contextvars.unbind_contextvars("tick")

    def _record(self, obs: Observation, plan: Plan, leader: bool) -> None:
        """Metrics and one log event per decision (repeats of an unchanged decision at debug)."""
        m = self.metrics
        for source in ("redis", *(f"fly:{a}" for a in self.observer.apps), "prometheus"):
            m.data_unknown.labels(source).set(1 if source in self.observer.unknown else 0)
        for q, view in obs.queues.items():
            if view is None:
                continue
            for state in ("ready", "delayed", "in_flight", "dead", "claimed"):
                m.queue_messages.labels(q, state).set(getattr(view, state))
            m.queue_oldest_age.labels(q).set(view.oldest_ready_age_s or 0.0)
        m.machines.clear()
        now = obs.now
        seen: set[str] = set()
        for machines in obs.machines_by_app.values():
            for mv in machines or ():
                pool = mv.pool or "(unknown)"
                m.machines.labels(pool, mv.state).inc()
                if mv.state == "started":
                    seen.add(mv.id)
                    self._account_cost(mv.id, pool, mv.size, mv.memory_mb, now)
        for mid in [k for k in self._cost_seen if k not in seen]:
            del self._cost_seen[mid]
        # The planner's own count (unknown apps at their worst case), so the gauges show the
        # numbers the caps were checked against.
        ledger = Ledger.from_observation(obs, self.policies, self.caps)
        for p in self.policies:
            live = ledger.live(p.name)
            m.live_machines.labels(p.name).set(live)
            m.desired_machines.labels(p.name).set(plan.desired.get(p.name, 0))
            m.machine_cap.labels("pool", p.name).set(p.max_machines)
            m.cap_usage.labels("pool", p.name).set(live / p.max_machines if p.max_machines else 0)
        m.machine_cap.labels("global", "all").set(self.caps.global_max)
        m.cap_usage.labels("global", "all").set(
            ledger.global_live / self.caps.global_max if self.caps.global_max else 0
        )
        for app, cap in self.caps.per_app.items():
            m.machine_cap.labels("app", app).set(cap)
            m.cap_usage.labels("app", app).set(ledger.app_live.get(app, 0) / cap if cap else 0)
        stats = getattr(self.governor, "stats", None)
        if stats is not None:
            for action, n in list(stats.waiting.items()):
                m.governor_waiting.labels(action).set(n)
        waiting: dict[str, int] = {}
        for d in plan.decisions:
            self._log_decision(d, leader)
            m.decisions.labels(d.pool or "(unknown)", d.kind, d.outcome).inc()
            if d.outcome == "not_taken" and d.reason not in ("no_demand",):
                m.decisions_not_taken.labels(d.pool or "(unknown)", d.reason).inc()
                if d.reason == "rate_limit" and d.pool:
                    waiting[d.pool] = waiting.get(d.pool, 0) + d.count
        for p in self.policies:
            m.launches_waiting_budget.labels(p.name).set(waiting.get(p.name, 0))

    async def _drain_job_events(self) -> None:
        """Runners append an event when a job ends; turn them into exact timing metrics."""
        key = job_events_key(self.settings.redis.prefix)
        try:
            raw = await self.redis.lpop(key, 1000)
        except Exception as exc:
            log.debug("job events not read", error=str(exc))
            return
        for item in raw or ():
            if not isinstance(item, bytes | str):
                continue
            try:
                ev = json.loads(item)
                pool = str(ev["pool"])
            except (ValueError, KeyError, TypeError):
                continue
            started, enqueued, finished = (
                ev.get("started_at"), ev.get("enqueued_at"), ev.get("finished_at")
            )
            m = self.metrics
            m.jobs_finished.labels(pool, "done" if ev.get("outcome") == "ack" else "failed").inc()
            if isinstance(started, int | float) and isinstance(enqueued, int | float):
                m.enqueue_to_started.labels(pool).observe(max(0.0, (started - enqueued) / 1e3))
            if isinstance(started, int | float) and isinstance(finished, int | float):
                m.job_run.labels(pool).observe(max(0.0, (finished - started) / 1e3))

    def _account_cost(
        self, machine_id: str, pool: str, size: str, memory_mb: int, now: float
    ) -> None:
        last = self._cost_seen.get(machine_id)
        self._cost_seen[machine_id] = now
        if last is None:
            return
        seconds = max(0.0, now - last)
        label = size or "shared-cpu-1x"
        self.metrics.machine_seconds.labels(pool, label).inc(seconds)
        price = price_per_second(label, memory_mb, self.settings.costs)
        self.metrics.cost.labels(pool, label).inc(seconds * price)

    def _log_decision(self, d: Decision, leader: bool) -> None:
        key = (d.pool, d.kind, d.reason)
        signature = (d.outcome, d.count)
        changed = self._last_logged.get(key) != signature
        self._last_logged[key] = signature
        fields = dict(
            pool=d.pool, kind=d.kind, outcome=d.outcome, reason=d.reason, count=d.count,
            inputs=dict(d.inputs), leader=leader,
        )
        if d.outcome == "acted" or changed:
            log.info("decision", message=d.message, **fields)
        else:
            log.debug("decision", message=d.message, **fields)

    async def _publish_status(self, result: TickResult, leader: bool) -> None:
        if not leader:
            return
        obs, plan = result.observation, result.plan
        status = {
            "at": obs.now,
            "tick": result.tick_id,
            "seconds": result.seconds,
            "queues": {
                q: None if v is None else {
                    "ready": v.ready, "delayed": v.delayed, "in_flight": v.in_flight,
                    "dead": v.dead, "claimed": v.claimed, "oldest_age_s": v.oldest_ready_age_s,
                }
                for q, v in obs.queues.items()
            },
            # Counts, not machines: this is written every tick and must stay small at 10k.
            "machines": {
                app: None if ms is None else dict(
                    Counter(f"{mv.pool or '(unknown)'}/{mv.state}" for mv in ms)
                )
                for app, ms in obs.machines_by_app.items()
            },
            "desired": dict(plan.desired),
            "inflight": dict(obs.inflight),
            "decisions": [
                {"pool": d.pool, "kind": d.kind, "outcome": d.outcome, "reason": d.reason,
                 "count": d.count, "message": d.message}
                for d in plan.decisions
            ],
            "unknown": dict(self.observer.unknown),
        }
        try:
            await self.redis.set(
                status_key(self.settings.redis.prefix), json.dumps(status), ex=STATUS_TTL_S
            )
        except Exception as exc:
            log.debug("status not published", error=str(exc))

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
