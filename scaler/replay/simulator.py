"""Replay a trace through the real planner on a virtual clock.

Each tick builds an :class:`~scaler.policy.types.Observation` from the simulated world (queues,
claims, the simulated Fly's listings and create budget) and calls :func:`scaler.policy.plan`, the
same function ``scaler run`` calls. The plan's actions are applied by a model of the act step
(:mod:`scaler.loop.act`), rule for rule: a launch claims the oldest ready messages and creates one
machine each, spending a create token; a requeue gives the job back unless its launch reached
``max_launches``; a destroy aborts the job that machine ran. Machines boot, run their job for the
run time the trace recorded and exit by themselves (``auto_destroy``); worker machines take ready
messages, ``jobs_per_machine`` at a time, and stop after ``idle_timeout`` once past
``min_lifetime``. Ticks follow the loop's rules: one when something changes (no closer than
``TICK_INTERVAL_S`` to the last), one at the plan's ``wake_at`` and one every ``resync_interval``.
docs/replay.md lists what is modelled and what is not.
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from scaler.config import Settings
from scaler.config.schema import PoolSpec
from scaler.local.config import REALISTIC, Timings
from scaler.loop.machines import caps_of, job_guest, pool_policy
from scaler.policy import plan as make_plan
from scaler.policy.budget import Spend
from scaler.policy.types import (
    ClaimView,
    Create,
    DeadLetter,
    Destroy,
    GiveBack,
    Launch,
    MarkOrphan,
    Observation,
    Plan,
    QueueView,
    Relaunch,
    RequeueOrDeadLetter,
    Start,
)
from scaler.replay.report import PoolStats, Report
from scaler.replay.simfly import SimFly, SimMachine
from scaler.replay.simjobs import Sampler, SimClaim, SimJob, machine_options
from scaler.replay.spend import RollingSpend
from scaler.replay.trace import Trace
from scaler.telemetry.costs import cost_per_second, price_per_second, size_label

__all__ = ["TICK_INTERVAL_S", "Simulator", "simulate"]

TICK_INTERVAL_S = 0.1
"""The closest two ticks follow each other (the loop re-lists no faster than this)."""
DEFAULT_RUN_S = 10.0


class Simulator:
    """One run of one config over one trace (see the module docstring)."""

    def __init__(self, settings: Settings, trace: Trace, *, timings: Timings = REALISTIC,
                 on_tick: Callable[[float, SimFly], None] | None = None) -> None:
        self.settings = settings
        self.trace = trace
        self.fly = SimFly(timings)
        self.on_tick = on_tick
        self.specs: dict[str, PoolSpec] = {p.name: p for p in settings.pools}
        self.policies = tuple(pool_policy(p, settings) for p in settings.pools)
        self.by_policy = {p.name: p for p in self.policies}
        self.pool_of_queue = {q: p.name for p in settings.pools for q in p.queues}
        self.caps = caps_of(settings)
        self.ready: dict[str, deque[SimJob]] = {
            q: deque() for p in settings.pools for q in p.queues}
        self.claims: dict[str, SimClaim] = {}
        self.worker_jobs: dict[str, set[str]] = {}
        self.jobs: list[SimJob] = []
        self.now = trace.header.started_at
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._tick_due: float | None = None
        self._last_tick = float("-inf")
        self._progress_at = self.now
        self.not_taken: dict[str, Counter[str]] = {p: Counter() for p in self.specs}
        self.stats = {p: PoolStats(pool=p) for p in self.specs}
        self.cap_violations: list[str] = []
        self.samples = Sampler()
        self._area: dict[str, float] = {p: 0.0 for p in self.specs}
        self.hour_spend = {p: RollingSpend() for p in self.specs}
        self.all_hour_spend = RollingSpend()
        self.app_hour_spend = {p.app: RollingSpend() for p in settings.pools}
        self.prices = {
            p.name: cost_per_second(p.guest.cpu_kind or "shared", p.guest.cpus or 1,
                                    p.guest.memory_mb or 0, settings.price_overrides)
            for p in settings.pools
        }
        self._last_area_t = self.now
        self.ticks = 0

    # -- the event queue ---------------------------------------------------------------------

    def _at(self, t: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, payload))

    def _want_tick(self, t: float) -> None:
        t = max(t, self._last_tick + TICK_INTERVAL_S)
        if self._tick_due is None or t < self._tick_due:
            self._tick_due = t
            self._at(t, "tick", None)

    def _load(self) -> None:
        runs: dict[str, tuple[float | None, str]] = {}
        for j in self.trace.jobs:
            runs[j.message_id] = (j.run_s, j.outcome)
        known = [r for r, _ in runs.values() if r is not None]
        default_run = statistics.median(known) if known else DEFAULT_RUN_S
        for e in self.trace.enqueues:
            run_s, outcome = runs.get(e.message_id, (None, "done"))
            job = SimJob(e.message_id, e.queue, e.t, default_run if run_s is None else run_s,
                         outcome, machine_options(e.options))
            self.jobs.append(job)
            self._at(e.t, "enqueue", job)
        resync = self.settings.scaler.resync_interval
        end = self.trace.events[-1].t if self.trace.events else self.now
        t = self.now
        while t <= end + resync:
            self._at(t, "resync", None)
            t += resync

    # -- the run -----------------------------------------------------------------------------

    def run(self, drain_s: float = 3600.0) -> Report:
        """Replay until every job ended and no machine is live, or until ``drain_s`` of virtual
        time passed after the trace's last event with no machine changing (a job no pool can run
        would otherwise wait forever)."""
        self._load()
        end = self.trace.events[-1].t if self.trace.events else self.now
        self._progress_at = end
        while self._events:
            t, _, kind, payload = heapq.heappop(self._events)
            if t > self._progress_at + drain_s:
                break
            self._advance(t)
            self._handle(kind, payload)
            if not self._events and self._unfinished():
                self._at(self.now + self.settings.scaler.resync_interval, "resync", None)
        return self._report()

    def _unfinished(self) -> bool:
        served = [j for j in self.jobs if j.queue in self.pool_of_queue]
        return any(j.ended is None for j in served) or any(
            m.live for m in self.fly.machines.values())

    def _advance(self, t: float) -> None:
        dt = t - self._last_area_t
        if dt > 0:
            spent: dict[str, float] = {}
            for m in self.fly.machines.values():
                if m.live:
                    self._area[m.pool] = self._area.get(m.pool, 0.0) + dt
                if m.state == "started":
                    s = self.stats[m.pool]
                    s.machine_seconds += dt
                    s.cost_usd += dt * m.price_per_s
                    spent[m.pool] = spent.get(m.pool, 0.0) + dt * m.price_per_s
            for pool, rolling in self.hour_spend.items():
                rolling.add(t, spent.get(pool, 0.0))
            for app, rolling in self.app_hour_spend.items():
                rolling.add(t, sum(v for p, v in spent.items() if self.specs[p].app == app))
            self.all_hour_spend.add(t, sum(spent.values()))
            self._last_area_t = t
        self.now = max(self.now, t)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "tick":
            self._tick_due = None
            self._tick()
            return
        if kind == "resync":
            self._want_tick(self.now)
            return
        if kind == "enqueue":
            job: SimJob = payload
            if job.queue in self.ready:
                self.ready[job.queue].append(job)
            self._wake_workers(job.queue)
        elif kind == "state":
            self._progress_at = max(self._progress_at, self.now)
            machine_id, generation, state = payload
            m = self.fly.machines.get(machine_id)
            if m is None or m.generation != generation:
                return
            self.fly.set_state(m, state, self.now)
            if state == "started":
                self._started(m)
        elif kind == "job_end":
            self._job_end(*payload)
        elif kind == "idle":
            self._idle_check(payload)
        self._check_caps()
        self._want_tick(self.now)

    # -- machines and jobs -------------------------------------------------------------------

    def _started(self, m: SimMachine) -> None:
        if m.job is None:
            m.idle_since = self.now
            self._feed_worker(m)
            return
        claim = self.claims.get(m.job)
        if claim is None or claim.machine_id != m.id:
            self._stop(m)
            return
        claim.running = True
        self._run(m, claim.job)

    def _run(self, m: SimMachine, job: SimJob) -> None:
        if job.started_at is None:
            job.started_at = self.now
        m.busy += 1
        if m.job is None:
            self.worker_jobs.setdefault(m.id, set()).add(job.id)
        self._at(self.now + job.run_s, "job_end", (m.id, m.generation, job))

    def _job_end(self, machine_id: str, generation: int, job: SimJob) -> None:
        m = self.fly.machines.get(machine_id)
        if m is None or m.generation != generation or job.ended is not None:
            return
        self._finish(job, job.outcome)
        m.busy -= 1
        if m.job is not None:
            self.claims.pop(job.id, None)
            m.finished_at = self.now
            self._stop(m)
        else:
            self.worker_jobs.get(m.id, set()).discard(job.id)
            m.idle_since = self.now
            self._feed_worker(m)

    def _finish(self, job: SimJob, outcome: str) -> None:
        job.ended, job.ended_at = outcome, self.now
        pool = self.pool_of_queue[job.queue]
        s = self.stats[pool]
        s.jobs += 1
        s.outcomes[outcome] = s.outcomes.get(outcome, 0) + 1
        if job.started_at is not None and outcome != "dead_lettered":
            s.waits.append(job.started_at - job.enqueued_at)
            s.wait_points.append((job.started_at, job.started_at - job.enqueued_at))

    def _stop(self, m: SimMachine) -> None:
        self.fly.set_state(m, "stopping", self.now)
        self._at(self.now + self.fly.timings.stop, "state",
                 (m.id, m.generation, "gone" if m.job else "stopped"))

    def _feed_worker(self, m: SimMachine) -> None:
        spec = self.specs[m.pool]
        while m.state == "started" and m.busy < spec.jobs_per_machine:
            job = next((self.ready[q].popleft() for q in spec.queues if self.ready[q]), None)
            if job is None:
                break
            self._run(m, job)
        if m.busy == 0 and m.state == "started":
            self._at(self.now + spec.idle_timeout, "idle", (m.id, m.generation, self.now))

    def _wake_workers(self, queue: str) -> None:
        pool = self.pool_of_queue.get(queue)
        if pool is None or not self.specs[pool].is_worker:
            return
        for m in list(self.fly.machines.values()):
            if m.pool == pool and m.state == "started" and m.job is None:
                self._feed_worker(m)

    def _idle_check(self, payload: tuple[str, int, float]) -> None:
        machine_id, generation, idle_since = payload
        m = self.fly.machines.get(machine_id)
        if m is None or m.generation != generation or m.busy or m.idle_since != idle_since:
            return
        spec = self.specs[m.pool]
        born = m.started_at or m.created_at
        if self.now - born < spec.min_lifetime:
            self._at(born + spec.min_lifetime, "idle", payload)
            return
        self._stop(m)

    def _check_caps(self) -> None:
        pools, apps, total = self.fly.live_counts()
        for name, n in pools.items():
            s = self.stats[name]
            s.peak_machines = max(s.peak_machines, n)
            if n > self.specs[name].max_machines:
                self.cap_violations.append(f"{self.now:.3f}: pool {name} has {n} live")
        for app, n in apps.items():
            cap = self.caps.per_app.get(app)
            if cap is not None and n > cap:
                self.cap_violations.append(f"{self.now:.3f}: app {app} has {n} live")
        if total > self.caps.global_max:
            self.cap_violations.append(f"{self.now:.3f}: {total} live in all")

    # -- a tick: observe, plan, act ----------------------------------------------------------

    def observe(self) -> Observation:
        """What the observer would read now."""
        now = self.now
        queues: dict[str, QueueView | None] = {}
        claims: dict[str, list[ClaimView]] = {q: [] for q in self.ready}
        for c in self.claims.values():
            claims.setdefault(c.job.queue, []).append(c.view())
        for q, dq in self.ready.items():
            queues[q] = QueueView(
                name=q, ready=len(dq), claimed=len(claims[q]),
                in_flight=sum(1 for m in self.fly.machines.values()
                              if m.job is None and m.busy and q in self.specs[m.pool].queues),
                oldest_ready_age_s=now - dq[0].enqueued_at if dq else None,
            )
        apps = {p.app for p in self.policies}
        return Observation(
            now=now, queues=queues,
            machines_by_app={a: self.fly.listing(a) for a in apps},
            claims={q: tuple(v) for q, v in claims.items()},
            create_budget={a: self.fly.create_budget(a, now) for a in apps},
            spend=Spend(
                total=self.all_hour_spend.total,
                by_app={a: r.total for a, r in self.app_hour_spend.items()},
                by_pool={p: r.total for p, r in self.hour_spend.items()},
                price_per_s=self.prices,
            ) if self.settings.budgets.any else None,
        )

    def _tick(self) -> None:
        self._last_tick = self.now
        self.ticks += 1
        result = make_plan(self.observe(), self.policies, self.caps)
        for d in result.not_taken():
            if d.pool in self.not_taken:
                self.not_taken[d.pool][d.reason] += 1
        self._act(result)
        self._check_caps()
        self._sample()
        if result.wake_at is not None and result.wake_at > self.now:
            self._want_tick(result.wake_at)
        if self.on_tick is not None:
            self.on_tick(self.now, self.fly)

    def _sample(self) -> None:
        s = self.samples
        s.times.append(self.now)
        pools, _, _ = self.fly.live_counts()
        for name, spec in self.specs.items():
            s.depth.setdefault(name, []).append(sum(len(self.ready[q]) for q in spec.queues))
            s.machines.setdefault(name, []).append(pools.get(name, 0))

    def _act(self, result: Plan) -> None:
        for a in result.actions:
            if isinstance(a, Launch):
                self._launch(a)
            elif isinstance(a, Relaunch):
                c = self.claims.get(a.claim.job)
                if c is not None and c.launch == a.claim.launch:
                    c.updated_at = self.now
                    self._create(self.specs[a.pool], c)
            elif isinstance(a, GiveBack | DeadLetter | RequeueOrDeadLetter):
                self._settle(a)
            elif isinstance(a, Destroy):
                m = self.fly.machines.get(a.machine.id)
                if m is not None and m.state not in ("destroying",):
                    self._requeue_worker_jobs(m)
                    self.fly.set_state(m, "destroying", self.now)
                    self._at(self.now + self.fly.timings.destroy, "state",
                             (m.id, m.generation, "gone"))
            elif isinstance(a, MarkOrphan):
                m = self.fly.machines.get(a.machine.id)
                if m is not None:
                    m.orphan_marked_at = self.now
            elif isinstance(a, Create):
                for _ in range(a.count):
                    self._create(self.specs[a.pool], None)
            elif isinstance(a, Start):
                m = self.fly.machines.get(a.machine.id)
                if m is not None and m.state == "stopped":
                    self.fly.set_state(m, "starting", self.now)
                    self._at(self.now + self.fly.timings.start, "state",
                             (m.id, m.generation, "started"))

    def _requeue_worker_jobs(self, m: SimMachine) -> None:
        """A destroyed worker's unacked messages go back to their queue (dramatiq's requeue)."""
        held = self.worker_jobs.pop(m.id, set())
        m.busy = 0
        for job in self.jobs:
            if job.id in held and job.ended is None:
                self.ready[job.queue].appendleft(job)

    def _launch(self, a: Launch) -> None:
        queue = self.ready.get(a.queue)
        spec = self.specs[a.pool]
        for _ in range(a.count):
            if not queue:
                return
            job = queue.popleft()
            launch = job.launches + 1
            job.launches = launch
            claim = SimClaim(job, a.pool, launch, self.now, f"{a.pool}-{job.id}-{launch}")
            self.claims[job.id] = claim
            self._create(spec, claim)

    def _create(self, spec: PoolSpec, claim: SimClaim | None) -> None:
        self.fly.bucket(spec.app, self.now).reserve(self.now)
        self.stats[spec.name].machines_created += 1
        guest = job_guest(spec, claim.job.options if claim else None)
        label = size_label(guest.cpu_kind or "shared", guest.cpus or 1)
        m = self.fly.new_machine(
            name=claim.machine_name if claim else f"{spec.name}-w", app=spec.app, pool=spec.name,
            now=self.now, size=label, memory_mb=guest.memory_mb or 0,
            price_per_s=price_per_second(label, guest.memory_mb or 0,
                                         self.settings.price_overrides))
        if claim is not None:
            m.job, m.queue, m.launch = claim.job.id, claim.job.queue, claim.launch
            claim.machine_id = m.id
        self._at(self.now + self.fly.timings.create, "state", (m.id, m.generation, "started"))

    def _settle(self, a: GiveBack | DeadLetter | RequeueOrDeadLetter) -> None:
        c = self.claims.get(a.claim.job)
        if c is None or c.launch != a.claim.launch:
            return
        del self.claims[c.job.id]
        if isinstance(a, DeadLetter) or (
            isinstance(a, RequeueOrDeadLetter) and c.launch >= a.max_launches
        ):
            self._finish(c.job, "dead_lettered")
            return
        if isinstance(a, GiveBack):
            c.job.launches -= 1
        self.ready[c.job.queue].appendleft(c.job)

    # -- the report --------------------------------------------------------------------------

    def _report(self) -> Report:
        span = max(1e-9, self._last_area_t - self.trace.header.started_at)
        for name, s in self.stats.items():
            s.mean_machines = self._area.get(name, 0.0) / span
            s.not_taken = dict(sorted(self.not_taken[name].items()))
            s.peak_hour_spend_usd = self.hour_spend[name].peak
            s.lost = sum(1 for j in self.jobs
                         if self.pool_of_queue.get(j.queue) == name and j.ended is None)
        return Report(
            config=self.settings.scaler.id, trace_note=self.trace.header.note,
            origin=self.trace.header.started_at,
            virtual_seconds=span, ticks=self.ticks, pools=list(self.stats.values()),
            cap_violations=self.cap_violations[:20],
            peak_hour_spend_usd=self.all_hour_spend.peak,
            samples_t=[t - self.trace.header.started_at for t in self.samples.times],
            samples_depth=self.samples.depth, samples_machines=self.samples.machines,
        )


def simulate(settings: Settings, trace: Trace, *, timings: Timings = REALISTIC) -> Report:
    """Replay ``trace`` under ``settings`` and return the report."""
    return Simulator(settings, trace, timings=timings).run()
