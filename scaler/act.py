"""Act: execute a :class:`~scaler.policy.types.Plan` through the Fly client and Redis.

Order within a tick: destroys and orphan marks first; then the claim settlements (give back,
dead-letter, requeue), each only after the destroy it ``requires_destroy`` succeeded; then starts,
launches and creates. Calls run concurrently under ``max_concurrent_calls``. Creates that outlive
the tick's deadline keep running as tasks and count as in-flight launches in the next observation,
so caps still hold. A failed action is logged and left for a later tick, never retried in a loop
here: the planner sees the same world again and decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import structlog

from scaler.claims import Claim, ClaimStore
from scaler.config import PoolSpec, Settings
from scaler.fly.client import AsyncFlyClient
from scaler.fly.errors import (
    BadRequest,
    Conflict,
    FlyError,
    InsufficientCapacity,
    MachineLimit,
    NotFound,
    RateLimited,
    Unprocessable,
)
from scaler.fly.models import CreateMachineRequest
from scaler.leader import Fence, Fenced
from scaler.machines import META_JOB, job_guest, per_job_request, worker_request
from scaler.metrics import Metrics
from scaler.observe import Overlay, orphans_key
from scaler.policy.types import (
    Action,
    ClaimView,
    Create,
    DeadLetter,
    Destroy,
    GiveBack,
    Launch,
    MarkOrphan,
    Plan,
    Relaunch,
    RequeueOrDeadLetter,
    Start,
)

__all__ = ["ActReport", "Actor"]

log = structlog.get_logger(__name__)


class _Created(NamedTuple):
    """How one create went: a ``launches_total`` result label, and the machine id when a machine
    is known to exist."""

    result: str
    machine_id: str | None = None
    error: str = ""


@dataclass
class ActReport:
    """What one act step did; ``errors`` lists the actions that failed, with why."""

    errors: list[str] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)  # machine names created or resolved


class Actor:
    """Executes plans. Keeps the tasks still running and the overlay the observer reads."""

    def __init__(
        self,
        settings: Settings,
        fly: AsyncFlyClient,
        redis: aioredis.Redis,
        claims: ClaimStore,
        metrics: Metrics,
        overlay: Overlay,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.fly = fly
        self.redis = redis
        self.claims = claims
        self.metrics = metrics
        self.overlay = overlay
        self.clock = clock
        self.pools: dict[str, PoolSpec] = {p.name: p for p in settings.pools}
        self._sem = asyncio.Semaphore(settings.scaler.max_concurrent_calls)
        self._pending: dict[str, set[asyncio.Task[Any]]] = {}

    def inflight(self) -> dict[str, int]:
        """Per pool, create/start calls still running (they count against caps)."""
        return {p: sum(not t.done() for t in ts) for p, ts in self._pending.items()}

    async def drain(self, wait_s: float | None = None) -> None:
        """Wait (at most ``wait_s``) for every call still running (at shutdown)."""
        tasks = [t for ts in self._pending.values() for t in ts if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=wait_s)

    def _track(self, pool: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        bucket = self._pending.setdefault(pool, set())
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        return task

    async def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        async with self._sem:
            return await fn()

    async def execute(
        self,
        plan: Plan,
        claims: Mapping[str, Claim],
        fence: Fence | None,
        deadline: float,
    ) -> ActReport:
        """Run ``plan``; ``claims``: redis_message_id -> the observed claim (with its message)."""
        report = ActReport()
        destroyed: set[str] = set()
        phase1 = [a for a in plan.actions if isinstance(a, Destroy | MarkOrphan)]
        phase2 = [
            a for a in plan.actions if isinstance(a, GiveBack | DeadLetter | RequeueOrDeadLetter)
        ]
        phase3 = [a for a in plan.actions if isinstance(a, Launch | Relaunch | Start | Create)]

        async def one(action: Action) -> None:
            try:
                await self._do(action, claims, fence, destroyed, report)
            except Fenced:
                raise
            except Exception as exc:  # one failed action never stops the others
                report.errors.append(f"{type(action).__name__} {action.pool}: {exc}")
                log.warning(
                    "action failed", action=type(action).__name__, pool=action.pool,
                    error=str(exc), error_type=type(exc).__name__,
                )

        for phase in (phase1, phase2):
            if phase:
                await asyncio.gather(*(one(a) for a in phase))
        tasks = [self._track(a.pool, one(a)) for a in phase3]
        if tasks:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.wait(tasks, timeout=remaining)
        return report

    async def _do(
        self,
        action: Action,
        claims: Mapping[str, Claim],
        fence: Fence | None,
        destroyed: set[str],
        report: ActReport,
    ) -> None:
        now_ms = int(self.clock() * 1000)
        if isinstance(action, Destroy):
            await self._destroy(action)
            destroyed.add(action.machine.id)
        elif isinstance(action, MarkOrphan):
            await self.redis.hsetnx(
                orphans_key(self.settings.redis.prefix), action.machine.id, str(self.clock())
            )
            log.info("orphan marked", machine=action.machine.id, pool=action.pool,
                     reason=action.reason)
        elif isinstance(action, GiveBack | DeadLetter | RequeueOrDeadLetter):
            if action.requires_destroy and action.requires_destroy not in destroyed:
                return  # the destroy failed: its machine may still run the job; try next tick
            await self._settle(action, fence, now_ms)
        elif isinstance(action, Launch):
            await self._launch(action, fence, now_ms, report)
        elif isinstance(action, Relaunch):
            claim = claims.get(action.claim.job)
            if claim is not None:
                await self._create_for_claim(action.pool, claim, fence, now_ms, report)
        elif isinstance(action, Start):
            await self._start(action)
        elif isinstance(action, Create):
            for _ in range(action.count):
                await self._create_worker(action.pool, report)

    async def _destroy(self, action: Destroy) -> None:
        m = action.machine
        with contextlib.suppress(NotFound):  # already gone: the goal is reached
            await self._call(lambda: self.fly.destroy_machine(m.app, m.id, force=action.force))
        self.overlay.destroyed[m.id] = self.clock()
        await self.redis.hdel(orphans_key(self.settings.redis.prefix), m.id)
        self.metrics.reaps.labels(action.pool or "(unknown)", action.reason).inc()
        log.info("machine destroyed", machine=m.id, name=m.name, pool=action.pool,
                 state=m.state, reason=action.reason, force=action.force)

    async def _settle(
        self, action: GiveBack | DeadLetter | RequeueOrDeadLetter, fence: Fence | None, now_ms: int
    ) -> None:
        c: ClaimView = action.claim
        if isinstance(action, GiveBack):
            outcome = await self.claims.give_back(c.queue, c.job, action.reason, fence)
        elif isinstance(action, DeadLetter):
            outcome = await self.claims.dead_letter(c.queue, c.job, action.reason, fence, now_ms)
        else:
            outcome = await self.claims.requeue_or_dead_letter(
                c.queue, c.job, action.reason, action.max_launches, fence, now_ms
            )
        # DeadLetter's reason is the validation text (for the record); the label stays bounded.
        label = "invalid_options" if isinstance(action, DeadLetter) else action.reason
        if outcome == "requeued":
            self.metrics.requeues.labels(action.pool, label).inc()
            self.metrics.jobs_finished.labels(action.pool, "requeued").inc()
        elif outcome == "dead_lettered":
            self.metrics.dead_letters.labels(action.pool, label).inc()
            self.metrics.jobs_finished.labels(action.pool, "dead_lettered").inc()
        log.info("claim settled", job=c.job, queue=c.queue, pool=action.pool,
                 outcome=outcome, reason=action.reason, launch=c.launch)

    async def _launch(
        self, action: Launch, fence: Fence | None, now_ms: int, report: ActReport
    ) -> None:
        got = await self.claims.claim(action.queue, action.pool, action.count, now_ms, fence)
        await asyncio.gather(
            *(self._create_for_claim(action.pool, c, fence, now_ms, report) for c in got)
        )

    async def _create_for_claim(
        self, pool_name: str, claim: Claim, fence: Fence | None, now_ms: int, report: ActReport
    ) -> None:
        pool = self.pools[pool_name]
        try:
            guest = job_guest(pool, claim.machine_options)
        except ValueError as exc:
            reason = f"invalid machine options: {exc}"
            await self.claims.dead_letter(claim.queue, claim.redis_message_id, reason, fence,
                                          now_ms)
            self.metrics.dead_letters.labels(pool_name, "invalid_options").inc()
            log.warning("job dead-lettered", job=claim.redis_message_id, pool=pool_name,
                        reason=reason)
            return
        request = per_job_request(pool, self.settings, claim, guest)
        sent = self.clock()
        if claim.enqueued_at is not None:
            self.metrics.enqueue_to_launch.labels(pool_name).observe(
                max(0.0, sent - claim.enqueued_at / 1000.0)
            )
        self.overlay.created[claim.machine_name] = (pool_name, sent)
        created = await self._create(pool, request, claim.redis_message_id)
        self.metrics.launches.labels(pool_name, created.result).inc()
        if created.machine_id is not None:
            report.launched.append(claim.machine_name)
            await self.claims.record_machine(
                claim.queue, claim.redis_message_id, created.machine_id,
                int(self.clock() * 1000), fence,
            )
            return
        self.overlay.created.pop(claim.machine_name, None)
        if created.result == "refused" and claim.machine_options:
            # Fly refused a machine shaped by the job's own options: the job is the problem.
            reason = f"Fly refused this job's machine: {created.error}"
            await self.claims.dead_letter(claim.queue, claim.redis_message_id, reason, fence,
                                          now_ms)
            self.metrics.dead_letters.labels(pool_name, "fly_refused").inc()
        # Otherwise the claim stays: a refusal of the pool's own template (fix the config) or a
        # transient failure; the planner relaunches it under the same name after the claim
        # grace, so it is retried at that pace, never in a loop, and the name keeps it idempotent.

    async def _create(
        self, pool: PoolSpec, request: CreateMachineRequest, job: str | None
    ) -> _Created:
        """Create one machine, resolving a name conflict by looking the machine up."""
        try:
            machine = await self._call(lambda: self.fly.create_machine(pool.app, request))
        except Conflict:
            # The deterministic name exists already: a previous create went through.
            if job is not None:
                found = await self._call(
                    lambda: self.fly.list_machines(
                        pool.app, include_deleted=True, metadata={META_JOB: job}
                    )
                )
                named = [m for m in found if m.name == request.name and m.id]
                if named:
                    return _Created("resolved_existing", named[0].id)
            return _Created("failed")
        except RateLimited:
            return _Created("rate_limited")
        except (InsufficientCapacity, MachineLimit) as exc:
            log.warning("no room for the machine", pool=pool.name, name=request.name,
                        error=str(exc))
            return _Created("capacity", error=str(exc))
        except (BadRequest, Unprocessable) as exc:
            log.error("machine refused", pool=pool.name, name=request.name, error=str(exc))
            return _Created("refused", error=str(exc))
        except FlyError as exc:
            log.warning("create failed", pool=pool.name, name=request.name, error=str(exc),
                        error_type=type(exc).__name__)
            return _Created("failed", error=str(exc))
        log.info("machine created", pool=pool.name, app=pool.app, machine=machine.id,
                 name=machine.name, region=machine.region)
        return _Created("created", machine.id)

    async def _start(self, action: Start) -> None:
        m = action.machine
        await self._call(lambda: self.fly.start_machine(m.app, m.id))
        self.overlay.started[m.id] = self.clock()
        self.metrics.launches.labels(action.pool, "started").inc()
        log.info("machine started", machine=m.id, pool=action.pool, reason=action.reason)

    async def _create_worker(self, pool_name: str, report: ActReport) -> None:
        pool = self.pools[pool_name]
        request = worker_request(pool, self.settings)
        assert request.name is not None
        self.overlay.created[request.name] = (pool_name, self.clock())
        created = await self._create(pool, request, None)
        self.metrics.launches.labels(pool_name, created.result).inc()
        if created.machine_id is not None:
            report.launched.append(request.name)
        else:
            self.overlay.created.pop(request.name, None)
