"""Act: execute a :class:`~scaler.policy.types.Plan` through the Fly client and Redis.

Order within a tick: destroys, orphan marks and exit watches (:mod:`scaler.loop.exits`: they run
in the background, never holding the tick) first; then the claim settlements (give back,
dead-letter, requeue), each only after the destroy it ``requires_destroy`` succeeded; then starts,
launches and creates. Calls run concurrently under ``max_concurrent_calls``. Creates that outlive
the tick's deadline keep running as tasks; every machine they may make is in
:class:`~scaler.loop.overlay.InFlight` until a listing shows it, so caps still hold. A failed action
is logged and left for a later tick, never retried in a loop here: the planner sees the same world
again and decides again. The act step decides nothing itself: a plan's claim actions carry the
claim's view (its message's machine options validated by the observer), and what a create came to
(refused by Fly, failed) is recorded in its claim for the next plan to judge (dead-letter the job,
or back off).

Only the leader acts. Every Redis write is fenced, and every Fly call (each retry included) first
checks that the fence the plan was made under is still this replica's: a replica whose lease
lapsed, even while its calls were waiting on the rate governor or retrying 429s, sends nothing
more. A create gives up after ``CREATE_TIMEOUT_S`` (its retries included), before the window its
claim records as pending ends, so no replica relaunches a claim whose create may still land.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from scaler.config import PoolSpec, Settings
from scaler.fly.client import AsyncFlyClient, precondition
from scaler.fly.errors import NotFound
from scaler.fly.models import CreateMachineRequest
from scaler.github.errors import GitHubError
from scaler.github.launcher import RunnerLauncher
from scaler.jobs.claims import ClaimStore
from scaler.jobs.keys import idle_workers_key, orphans_key
from scaler.jobs.leader import UNFENCED, Fence, Fenced
from scaler.jobs.slots import SlotStore
from scaler.loop.claimview import check_options, claim_view
from scaler.loop.creates import CREATE_RETRY, Created, send_create
from scaler.loop.exits import ExitWatch
from scaler.loop.governor import RateGovernor
from scaler.loop.machines import per_job_request, worker_request
from scaler.loop.overlay import InFlight, Overlay
from scaler.loop.slots import create_slots, launch_on_slots
from scaler.policy.types import (
    Action,
    AwaitExit,
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
    SlotCreate,
    SlotLaunch,
    Start,
    Suspend,
    Withdraw,
)
from scaler.telemetry.metrics import Metrics

__all__ = ["CREATE_WINDOW_S", "ActReport", "Executor"]

log = structlog.get_logger(__name__)

CREATE_WINDOW_S = 30.0
"""How long a claim's create is recorded as pending (no replica relaunches it meanwhile)."""


@dataclass
class ActReport:
    """What one act step did; ``errors`` lists the actions that failed, with why."""

    errors: list[str] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)  # machine names created or resolved


class Executor:
    """Executes plans. Keeps the tasks still running; records what it sent in the loop's
    ``overlay`` and ``inflight`` (the same objects the observer lays over its listings)."""

    def __init__(
        self,
        settings: Settings,
        fly: AsyncFlyClient,
        redis: aioredis.Redis,
        claims: ClaimStore,
        metrics: Metrics,
        overlay: Overlay,
        inflight: InFlight,
        *,
        clock: Callable[[], float] = time.time,
        current_fence: Callable[[], Fence | None] = lambda: UNFENCED,
        runners: RunnerLauncher | None = None,
        wake: Callable[[], None] = lambda: None,
        governor: RateGovernor | None = None,
    ) -> None:
        self.settings = settings
        self.runners = runners
        self.fly = fly
        self.redis = redis
        self.claims = claims
        self.metrics = metrics
        self.overlay = overlay
        self.inflight = inflight
        self.clock = clock
        self.current_fence = current_fence
        self.pools: dict[str, PoolSpec] = {p.name: p for p in settings.pools}
        self._sem = asyncio.Semaphore(settings.scaler.max_concurrent_calls)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.exits = ExitWatch(fly, overlay, wake=wake, governor=governor, clock=clock,
                               on_result=lambda r: metrics.exit_waits.labels(r).inc())

    async def drain(self, wait_s: float | None = None) -> None:
        """Wait (at most ``wait_s``) for every call still running, then abandon the rest (at
        shutdown, while the lease is still held, so the next leader finds their outcome)."""
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=wait_s)
        await self.abandon()

    async def abandon(self) -> None:
        """Cancel every call still running, retries included (this replica stopped leading)."""
        await self.exits.cancel()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.warning("in-flight calls abandoned", count=len(tasks))

    def _track(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here: a failed background task is never silent
        if isinstance(exc, Fenced):
            self.metrics.tick_errors.labels("fenced").inc()
            log.warning("act refused: this replica is no longer the leader", error=str(exc))
        elif exc is not None:
            log.error("act task failed", error=str(exc), error_type=type(exc).__name__)

    def _check_fence(self, fence: Fence | None) -> None:
        """Raise :class:`Fenced` unless ``fence`` is still this replica's current fence."""
        if fence is UNFENCED:
            return
        current = self.current_fence()
        if fence is None or current is None or current.value != fence.value:
            raise Fenced("the lease this plan was made under is gone: not sending the call")

    async def call(self, fn: Callable[[], Awaitable[Any]], fence: Fence | None) -> Any:
        """One Fly call under the concurrency limit, the fence checked before every attempt."""
        # The engine runs the check before every attempt and after every governor wait.
        async with self._sem:
            with precondition(lambda: self._check_fence(fence)):
                return await fn()

    async def execute(
        self,
        plan: Plan,
        fence: Fence | None,
        deadline: float,
    ) -> ActReport:
        """Run ``plan`` (its claim actions carry all they need) under ``fence``.

        Raises:
            Fenced: ``fence`` is ``None`` or no longer current: nothing is done.
        """
        self._check_fence(fence)
        report = ActReport()
        destroyed: set[str] = set()
        phase1 = [a for a in plan.actions
                  if isinstance(a, Destroy | MarkOrphan | Suspend | AwaitExit)]
        phase2 = [
            a for a in plan.actions
            if isinstance(a, GiveBack | DeadLetter | RequeueOrDeadLetter | Withdraw)
        ]
        phase3 = [a for a in plan.actions
                  if isinstance(a, Launch | Relaunch | Start | Create | SlotLaunch | SlotCreate)]

        async def one(action: Action) -> None:
            try:
                await self._do(action, fence, destroyed, report)
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
        tasks = [self._track(one(a)) for a in phase3]
        if tasks:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.wait(tasks, timeout=remaining)
        return report

    async def _do(
        self,
        action: Action,
        fence: Fence | None,
        destroyed: set[str],
        report: ActReport,
    ) -> None:
        now_ms = int(self.clock() * 1000)
        if isinstance(action, Destroy):
            await self._destroy(action, fence)
            destroyed.add(action.machine.id)
        elif isinstance(action, AwaitExit):
            await self.exits.watch(action.machine, lambda: self._check_fence(fence))
        elif isinstance(action, MarkOrphan):
            await self.redis.hsetnx(
                orphans_key(self.settings.redis.prefix), action.machine.id, str(self.clock())
            )
            log.info("orphan marked", machine=action.machine.id, pool=action.pool,
                     reason=action.reason, message_id=action.machine.message_id)
        elif isinstance(action, GiveBack | DeadLetter | RequeueOrDeadLetter):
            if action.requires_destroy and action.requires_destroy not in destroyed:
                return  # the destroy failed: its machine may still run the job; try next tick
            await self._settle(action, fence, now_ms)
        elif isinstance(action, Withdraw):
            if action.requires_destroy and action.requires_destroy not in destroyed:
                return
            await self._withdraw(action, fence, now_ms)
        elif isinstance(action, Launch):
            await self._launch(action, fence, now_ms, report)
        elif isinstance(action, Relaunch):
            await self._relaunch(action, fence, now_ms, report)
        elif isinstance(action, Start):
            await self._start(action, fence)
        elif isinstance(action, Suspend):
            await self._suspend(action, fence)
        elif isinstance(action, Create):
            for _ in range(action.count):
                await self._create_worker(action.pool, fence, report)
        elif isinstance(action, SlotLaunch):
            await launch_on_slots(self, action, fence, now_ms, report)
        elif isinstance(action, SlotCreate):
            await create_slots(self, action, fence, report)

    async def _destroy(self, action: Destroy, fence: Fence | None) -> None:
        m = action.machine
        with contextlib.suppress(NotFound):  # already gone: the goal is reached
            await self.call(
                lambda: self.fly.destroy_machine(m.app, m.id, force=action.force), fence
            )
        self.overlay.destroyed[m.id] = self.clock()
        await self.redis.hdel(orphans_key(self.settings.redis.prefix), m.id)
        pool = self.pools.get(action.pool or "")
        if self.runners is not None and pool is not None and pool.is_github and m.name:
            if action.reason == "idle_timeout":
                self.metrics.github_runners_reaped.labels(pool.name, action.reason).inc()
            await self._deregister(m.name)
        if m.slot is not None:
            await SlotStore(self.redis, self.settings.redis.prefix).forget(m.id)
        self.metrics.reaps.labels(action.pool or "(unknown)", action.reason).inc()
        log.info("machine destroyed", machine=m.id, name=m.name, pool=action.pool,
                 state=m.state, reason=action.reason, force=action.force,
                 message_id=m.message_id)

    async def _withdraw(self, action: Withdraw, fence: Fence | None, now_ms: int) -> None:
        """End a surplus runner's claim and drop its message (its demand is gone)."""
        c = action.claim
        assert self.runners is not None, "a Withdraw is planned for GitHub runner pools only"
        done = await self.runners.ledger.withdraw_claim(c.queue, c.job, c.launch, fence, now_ms)
        if done:
            self.metrics.github_runners_reaped.labels(action.pool, action.reason).inc()
            log.info("github runner withdrawn", pool=action.pool, runner=c.machine_name,
                     reason=action.reason, message_id=c.message_id)

    async def _deregister(self, machine_name: str) -> None:
        """Remove a destroyed runner machine's registration (best effort: a registration whose
        runner never connects is removed by GitHub after a day)."""
        assert self.runners is not None
        try:
            await self.runners.deregister(machine_name)
        except GitHubError as exc:
            log.warning("github runner not deregistered", runner=machine_name, error=str(exc))

    async def _settle(
        self, action: GiveBack | DeadLetter | RequeueOrDeadLetter, fence: Fence | None, now_ms: int
    ) -> None:
        c: ClaimView = action.claim
        if isinstance(action, GiveBack):
            outcome = await self.claims.give_back(
                c.queue, c.job, action.reason, fence, launch=c.launch
            )
        elif isinstance(action, DeadLetter):
            outcome = await self.claims.dead_letter(
                c.queue, c.job, action.reason, fence, now_ms, launch=c.launch
            )
        else:
            outcome = await self.claims.requeue_or_dead_letter(
                c.queue, c.job, action.reason, action.max_launches, fence, now_ms,
                launch=c.launch,
            )
        # DeadLetter's reason is a text for the record; its label is its bounded cause.
        label = action.cause if isinstance(action, DeadLetter) else action.reason
        if outcome == "requeued":
            self.metrics.requeues.labels(action.pool, label).inc()
            self.metrics.jobs_finished.labels(action.pool, "requeued").inc()
        elif outcome == "dead_lettered":
            self.metrics.dead_letters.labels(action.pool, label).inc()
            self.metrics.jobs_finished.labels(action.pool, "dead_lettered").inc()
            # The job's one line, as the recorder writes for the jobs that end in their machine.
            log.warning("job finished", outcome=outcome, queue=c.queue, pool=action.pool,
                        message_id=c.message_id, redis_message_id=c.job, machine=c.machine_id,
                        launch=c.launch, reason=action.reason, cause=label)
            return
        log.info("claim settled", job=c.job, message_id=c.message_id, queue=c.queue,
                 pool=action.pool, outcome=outcome, reason=action.reason, launch=c.launch)

    async def _launch(
        self, action: Launch, fence: Fence | None, now_ms: int, report: ActReport
    ) -> None:
        # Reserved before the claim is made, so the next observation counts these machines even
        # while the claim script or the creates are still running.
        keys = self.inflight.reserve(action.pool, action.app, self.clock(), [None] * action.count)
        try:
            got = await self.claims.claim(
                action.queue, action.pool, action.count, now_ms, fence, app=action.app,
                create_window_ms=int(CREATE_WINDOW_S * 1000),
            )
        except BaseException:
            self.inflight.drop(*keys)
            raise
        for key, claim in zip(keys, got, strict=False):
            self.inflight.name(key, claim.machine_name)
        self.inflight.drop(*keys[len(got):])
        # No observation has seen these claims yet: their views are made the way the observer
        # makes them (its options check included), for their creates to go out now.
        views = [claim_view(c, check_options(c)) for c in got]
        await asyncio.gather(*(
            self.create_for_claim(action.pool, v, key, fence, report)
            for key, v in zip(keys, views, strict=False)
        ))

    async def _relaunch(
        self, action: Relaunch, fence: Fence | None, now_ms: int, report: ActReport
    ) -> None:
        c = action.claim
        began = await self.claims.begin_create(
            c.queue, c.job, c.launch, now_ms, int(CREATE_WINDOW_S * 1000), fence
        )
        if not began:  # finished, settled or bound meanwhile: nothing to create
            return
        (key,) = self.inflight.reserve(action.pool, action.app, self.clock(), [c.machine_name])
        await self.create_for_claim(action.pool, c, key, fence, report)

    async def create_for_claim(
        self, pool_name: str, claim: ClaimView, key: int, fence: Fence | None, report: ActReport
    ) -> None:
        """Create a claim's own machine and record what the create came to in the claim."""
        if claim.machine_options_error is not None:
            # A claim just made whose options cannot be honoured: no create. The next plan sees
            # the error first and dead-letters the message.
            self.inflight.drop(key)
            report.errors.append(f"Launch {pool_name}: {claim.job} not created: "
                                 f"{claim.machine_options_error}")
            return
        pool = self.pools[pool_name]
        request = per_job_request(pool, self.settings, claim)
        if pool.is_github and self.runners is not None:
            try:
                request = await self.runners.prepare(pool, request)
            except GitHubError as exc:
                # No JIT config, no machine: the claim backs off as after a failed create.
                self.inflight.drop(key)
                log.warning("github runner not registered", pool=pool_name,
                            runner=claim.machine_name, error=str(exc))
                await self.claims.create_failed(
                    claim.queue, claim.job, claim.launch, int(self.clock() * 1000),
                    f"github: {exc}", fence, refused=False,
                )
                return
        sent = self.clock()
        if claim.enqueued_at is not None:
            self.metrics.enqueue_to_launch.labels(pool_name).observe(
                max(0.0, sent - claim.enqueued_at)
            )
        # Cancelled (stepped down, shutdown) or fenced, the create may still land: the claim keeps
        # its pending window, after which the leader finds the machine by name or relaunches it
        # under the same name.
        app = claim.app or pool.app  # the app recorded in the claim, where lookups find it
        created = await self.create_counted(pool, request, claim.job, key, fence, report, app)
        if created.machine_id is not None:
            await self.claims.record_machine(
                claim.queue, claim.job, claim.launch, created.machine_id,
                int(self.clock() * 1000), fence,
            )
            return
        self.inflight.drop(key)
        if created.result == "abandoned":
            return  # it may have landed: the pending window runs out, then the name decides
        # Recorded in the claim, for the next plan to judge: a refusal of a machine shaped by the
        # job's own options dead-letters the job; any other failure (the pool's own template
        # refused, no capacity, a transient error) backs off (claim grace, doubling up to a
        # ceiling) before the next attempt under the same, idempotent name.
        refused = created.result == "refused"
        await self.claims.create_failed(
            claim.queue, claim.job, claim.launch, int(self.clock() * 1000),
            created.error if refused else f"{created.result}: {created.error}", fence,
            refused=refused,
        )
        if refused:
            report.errors.append(f"Launch {pool_name}: {claim.job} refused: {created.error}")

    async def _create(
        self, pool: PoolSpec, request: CreateMachineRequest, job: str | None, fence: Fence | None,
        app: str,
    ) -> Created:
        """Create one machine (see :func:`~scaler.loop.creates.send_create`). A job's machine may
        exist already under its deterministic name (an earlier create, abandoned or of another
        leader, landed): the client then looks a name conflict up and returns that machine."""
        return await send_create(
            lambda: self.call(
                lambda: self.fly.create_machine(
                    app, request, retry=CREATE_RETRY, may_exist=job is not None
                ),
                fence,
            ),
            pool, request, app,
        )

    async def _start(self, action: Start, fence: Fence | None) -> None:
        m = action.machine
        await self.call(lambda: self.fly.start_machine(m.app, m.id), fence)
        self.overlay.started[m.id] = self.clock()
        self.metrics.launches.labels(action.pool, "started").inc()
        log.info("machine started", machine=m.id, pool=action.pool, reason=action.reason)

    async def _suspend(self, action: Suspend, fence: Fence | None) -> None:
        m = action.machine
        # Its idle mark goes first: no later tick suspends it again from a lagging listing (if
        # the suspend fails, the worker rests out its wait and exits, as without the tier).
        await self.redis.hdel(idle_workers_key(self.settings.redis.prefix), m.id)
        await self.call(lambda: self.fly.suspend_machine(m.app, m.id), fence)
        log.info("machine suspended", machine=m.id, pool=action.pool, reason=action.reason)

    async def _create_worker(
        self, pool_name: str, fence: Fence | None, report: ActReport
    ) -> None:
        pool = self.pools[pool_name]
        await self.create_unbound(pool, worker_request(pool, self.settings), fence, report)

    async def create_unbound(
        self, pool: PoolSpec, request: CreateMachineRequest, fence: Fence | None,
        report: ActReport,
    ) -> None:
        """Create one machine bound to no job (a worker, a warm slot), counted in flight."""
        assert request.name is not None
        (key,) = self.inflight.reserve(pool.name, pool.app, self.clock(), [request.name])
        created = await self.create_counted(pool, request, None, key, fence, report)
        if created.machine_id is None and created.result == "abandoned":
            self.inflight.returned(key, None, self.clock())  # counted until a listing settles it
        elif created.machine_id is None:
            self.inflight.drop(key)

    async def create_counted(
        self, pool: PoolSpec, request: CreateMachineRequest, job: str | None, key: int,
        fence: Fence | None, report: ActReport, app: str | None = None,
    ) -> Created:
        """:meth:`_create`, with its in-flight entry and its launch counted: dropped if the call
        is cancelled or fenced, marked returned once a machine exists."""
        try:
            created = await self._create(pool, request, job, fence, app or pool.app)
        except BaseException:
            self.inflight.drop(key)
            raise
        self.metrics.launches.labels(pool.name, created.result).inc()
        if created.machine_id is not None:
            self.inflight.returned(key, created.machine_id, self.clock())
            report.launched.append(request.name or "")
        return created
