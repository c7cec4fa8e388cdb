"""What one tick tells operators: metrics, one log event per decision (repeats at debug), exact job
timings drained from the runners' job events, cost accounting, and the status ``scaler status``
reads. Kept out of the reconciler so the loop reads as observe -> plan -> act."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog

from scaler.config import Settings
from scaler.jobs.keys import job_events_key, status_key
from scaler.jobs.outcomes import JobEvent
from scaler.loop.governor import RateGovernor
from scaler.loop.observe import Observer
from scaler.loop.spend import machine_rate, machine_rates
from scaler.policy.budget_room import BudgetRoom
from scaler.policy.caps import Ledger
from scaler.policy.index import AppIndex, index_apps
from scaler.policy.types import Caps, Decision, Observation, Plan, PoolPolicy
from scaler.telemetry.metrics import Metrics

__all__ = ["STATUS_TTL_S", "TickRecorder", "job_cost"]

log = structlog.get_logger(__name__)

STATUS_TTL_S = 120

_QUEUE_STATES = ("ready", "delayed", "in_flight", "dead", "claimed")


class TickRecorder:
    """Records ticks for one reconciler (it keeps which decisions were logged and when each
    started machine was last priced)."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        metrics: Metrics,
        governor: RateGovernor,
        policies: Sequence[PoolPolicy],
        caps: Caps,
        observer: Observer,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.governor = governor
        self.policies = tuple(policies)
        self.caps = caps
        self.observer = observer
        self._last_logged: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._cost_seen: dict[str, float] = {}  # started machine id -> when last accrued
        self._queues_recorded: dict[str, tuple[int, ...]] = {}  # the counts each queue shows
        self._unavailable: dict[str, str] = {}  # source -> the problem last logged
        self._budgets: list[dict[str, Any]] = []  # for the status, as last recorded
        # started per-job machines as last listed: id -> (started_at, USD per second)
        self._started: dict[str, tuple[float, float]] = {}
        self._aged: set[str] = set()  # apps with a listing age series

    def record(self, obs: Observation, plan: Plan, leader: bool) -> None:
        """Metrics and one log event per decision (repeats of an unchanged decision at debug)."""
        m = self.metrics
        for source in ("redis", *(f"fly:{a}" for a in self.observer.apps), "prometheus"):
            m.data_unknown.labels(source).set(1 if source in self.observer.unknown else 0)
        self._log_unavailable(self.observer.unknown)
        self._record_queues(obs)
        self._record_machines(obs)
        self._record_listing_ages(obs.now)
        # The planner's own count (unknown apps at their worst case), so the gauges show the
        # numbers the caps were checked against.
        # The apps' index only when budgets need it (the ledger builds one itself if claims do).
        apps = index_apps(obs, self.policies) if self.caps.budgets.any else None
        ledger = Ledger.from_observation(obs, self.policies, self.caps, apps)
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
        if apps is not None:
            self._record_budgets(obs, ledger, apps)

    def _record_budgets(
        self, obs: Observation, ledger: Ledger, apps: Mapping[str, AppIndex]
    ) -> None:
        """Spend, budget and what is left per budget scope, as the planner counted them."""
        room = BudgetRoom.from_observation(obs, self.policies, self.caps.budgets, ledger, apps)
        m = self.metrics
        self._budgets = []
        for (scope, name), usd in room.budget.items():
            label = name or "all"
            m.budget.labels(scope, label).set(usd)
            known = obs.spend is not None
            if known:
                m.spend_hour.labels(scope, label).set(room.spent[(scope, name)])
                m.budget_remaining.labels(scope, label).set(room.room[(scope, name)])
            self._budgets.append({
                "scope": scope, "name": label, "budget": usd,
                "spent": room.spent[(scope, name)] if known else None,
                "committed": room.committed[(scope, name)] if known else None,
                "remaining": room.room[(scope, name)] if known else None,
            })

    def _log_unavailable(self, unknown: dict[str, str]) -> None:
        """A source that cannot be read is a warning once, when it starts or its cause changes,
        and an info line when it is back; not one line per tick."""
        for source, problem in unknown.items():
            if self._unavailable.get(source) != problem:
                log.warning("data unavailable", source=source, problem=problem)
                self._unavailable[source] = problem
        for source in [s for s in self._unavailable if s not in unknown]:
            del self._unavailable[source]
            log.info("data available again", source=source)

    async def drain_job_events(self) -> None:
        """Turn the job events (appended where each job ended) into metrics, counted as the
        message's status says (a dead letter is ``dead_lettered``), and one ``job finished`` line
        per job: info, or a warning with the reason for a dead letter."""
        key = job_events_key(self.settings.redis.prefix)
        try:
            raw = await self.redis.lpop(key, 1000)
        except Exception as exc:
            log.debug("job events not read", error=str(exc))
            return
        m = self.metrics
        for item in raw or ():
            if not isinstance(item, bytes | str):
                continue
            ev = JobEvent.parse(item)
            if ev is None:
                continue
            m.jobs_finished.labels(ev.pool, ev.outcome).inc()
            if ev.outcome == "dead_lettered":
                m.dead_letters.labels(ev.pool, ev.cause or "job_failed").inc()
            if ev.wait_s is not None:
                m.enqueue_to_started.labels(ev.pool).observe(ev.wait_s)
            if ev.run_s is not None:
                m.job_run.labels(ev.pool).observe(ev.run_s)
            cost = job_cost(ev, self._started, self.observer.prices)
            if cost is not None:
                m.job_cost.labels(ev.pool).observe(cost)
            _log_job(ev, cost)



    def _record_queues(self, obs: Observation) -> None:
        """Queue gauges; the counts only of the queues whose counts changed since the last tick
        (the gauges keep their values: at 100 queues this was most of the recorder's label
        lookups). The oldest message's age moves every tick and is always set."""
        m = self.metrics
        for q, view in obs.queues.items():
            if view is None:
                continue
            counts = tuple(getattr(view, state) for state in _QUEUE_STATES)
            if self._queues_recorded.get(q) != counts:
                for state, n in zip(_QUEUE_STATES, counts, strict=True):
                    m.queue_messages.labels(q, state).set(n)
                self._queues_recorded[q] = counts
            m.queue_oldest_age.labels(q).set(view.oldest_ready_age_s or 0.0)

    def _record_listing_ages(self, now: float) -> None:
        """How old each app's listing was when the tick planned on it; an app whose listing is
        unknown has no age (its series is removed: ``data_unknown`` says why)."""
        gauge = self.metrics.listing_age
        taken = self.observer.listings_taken
        for app, at in taken.items():
            gauge.labels(app).set(max(0.0, now - at))
        for app in self._aged.difference(taken):
            gauge.remove(app)
        self._aged = set(taken)

    def _record_machines(self, obs: Observation) -> None:
        """Machines by pool and state, and the started machines' seconds and cost since each was
        last seen, aggregated per label set first: one gauge set and one counter increment per
        (pool, state) and per (pool, size), not per machine."""
        m = self.metrics
        now = obs.now
        self._started = {
            mv.id: (mv.started_at, rate)
            for mv, rate in machine_rates(
                (mv for ms in obs.machines_by_app.values() for mv in ms or () if mv.job),
                self.settings.price_overrides, self.observer.prices,
            )
            if mv.started_at is not None
        }
        states: dict[tuple[str, str], int] = {}
        # (pool, size label as listed, memory_mb) -> started seconds accrued this tick
        accrued: dict[tuple[str | None, str, int], float] = {}
        last_seen: dict[str, float] = self._cost_seen
        seen: dict[str, float] = {}
        for machines in obs.machines_by_app.values():
            for mv in machines or ():
                key_state = (mv.pool or "(unknown)", mv.state)
                states[key_state] = states.get(key_state, 0) + 1
                if mv.state != "started" or mv.id in seen:
                    continue
                seen[mv.id] = now
                last = last_seen.get(mv.id)
                if last is not None:
                    key = (mv.pool, mv.size, mv.memory_mb)
                    accrued[key] = accrued.get(key, 0.0) + max(0.0, now - last)
        self._cost_seen = seen
        m.machines.clear()
        for (pool, state), n in states.items():
            m.machines.labels(pool, state).set(n)
        overrides, prices = self.settings.price_overrides, self.observer.prices
        for (owner, size, memory_mb), seconds in accrued.items():
            # Priced as the budgets' ledger prices them (its own size, else its pool's price).
            rate = machine_rate(size, memory_mb, owner, overrides, prices)
            label = size or "shared-cpu-1x"
            m.machine_seconds.labels(owner or "(unknown)", label).inc(seconds)
            m.cost.labels(owner or "(unknown)", label).inc(seconds * rate)

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

    async def publish_status(
        self, obs: Observation, plan: Plan, tick_id: str, seconds: float
    ) -> None:
        """Write the leader's last tick where ``scaler status`` and ``scaler dev`` read it."""
        status = {
            "at": obs.now,
            "tick": tick_id,
            "seconds": seconds,
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
            "budgets": self._budgets,
        }
        try:
            await self.redis.set(
                status_key(self.settings.redis.prefix), json.dumps(status), ex=STATUS_TTL_S
            )
        except Exception as exc:
            log.debug("status not published", error=str(exc))


def job_cost(
    ev: JobEvent, started: Mapping[str, tuple[float, float]], prices: Mapping[str, float]
) -> float | None:
    """A job's estimated cost, machine-seconds x price: from when its machine was listed started
    (``started``: machine id -> (started_at, USD per second)) to the job's end, at that machine's
    price; for a machine no listing showed started, the job's run time at its pool's price
    (``prices``); ``None`` when neither is known."""
    seen = started.get(ev.machine_id or "")
    if seen is not None and ev.finished_at is not None:
        started_at, rate = seen
        return max(0.0, ev.finished_at / 1e3 - started_at) * rate
    price = prices.get(ev.pool)
    if ev.run_s is None or price is None:
        return None
    return ev.run_s * price


def _log_job(ev: JobEvent, cost: float | None = None) -> None:
    """One line per finished job, with dramatiq's message_id (the id the app got from send())
    and its estimated cost (:func:`job_cost`)."""
    fields: dict[str, Any] = dict(
        outcome=ev.outcome, queue=ev.queue, pool=ev.pool, message_id=ev.message_id,
        redis_message_id=ev.redis_message_id, machine=ev.machine_id, launch=ev.launch,
        actor=ev.actor,
        run_s=None if ev.run_s is None else round(ev.run_s, 3),
        cost_usd=None if cost is None else round(cost, 8),
    )
    if ev.outcome == "dead_lettered":
        log.warning("job finished", reason=ev.reason, cause=ev.cause, **fields)
    elif ev.reason:
        log.info("job finished", error=ev.reason, **fields)
    else:
        log.info("job finished", **fields)
