"""Observe: read Redis, Fly and Prometheus into one immutable :class:`Observation` per tick.

Cost per tick: one Redis script call for every queue's counts, one for the claims and their
message bodies (read at one instant), one pipeline for the orphan marks and the machines whose job
finished (and a delete of the marks of machines gone), and at most one Fly list call per app (apps
listed concurrently), filtered by our metadata. Fly allows one list call per second per app
(burst 3): a listing is refreshed when it is ``list_interval`` old
and the rate governor has a token for it, and reused otherwise (for at most ``max_list_age``,
after which the tick waits for budget). When listings are slow (thousands of machines: see
:data:`SLOW_LIST_S`) they are refreshed in the background while the tick plans on the newest
listing read of each app, again for at most ``max_list_age``. A listing is taken when its
request was sent. What the act step did since (creates in flight, starts, destroys:
:mod:`scaler.loop.overlay`) is laid over a reused listing so that caps still count every
machine. Anything that cannot be read is ``None``: unknown, never zero.

The machines whose job finished are read after the claims: a claim the runner ended is then
either still read, or its machine is already marked finished, never neither (which would look
like an orphan). When the scaler first saw a machine's job finished is what the planner's grace
runs from (the runner's clock may be off).

Claims are read for every queue that has any (``{prefix}:claim-queues``), not only the queues of
today's per-job pools, and the apps their machines were created in are listed too: a pool renamed
or removed mid-job still has its claims settled and its machines seen.

Fly's timestamps are moved onto this machine's clock with the offset measured from Fly's ``Date``
headers (when it is over a second), so boot and runtime limits hold whatever either clock says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from scaler.config import PoolSpec, Settings
from scaler.fly.client import AsyncFlyClient
from scaler.fly.errors import Forbidden, NotFound, Unauthorized, listing_problem
from scaler.github.ledger import Ledger as GitHubLedger
from scaler.jobs.claims import ClaimStore
from scaler.jobs.keys import finished_machines_key, idle_workers_key, orphans_key
from scaler.jobs.queues import read_queue_stats
from scaler.jobs.slots import SlotStore
from scaler.loop.claimview import Checked, check_options, claim_view
from scaler.loop.governor import RateGovernor
from scaler.loop.listing import ViewCache
from scaler.loop.machines import META_SCALER
from scaler.loop.overlay import InFlight, Listed, Overlay
from scaler.loop.prometheus import PrometheusReader
from scaler.loop.spend import SpendLedger, machine_rates
from scaler.policy.budget import Spend
from scaler.policy.types import ClaimView, MachineView, Observation, QueueView, RunnerView
from scaler.telemetry.costs import cost_per_second

__all__ = ["Observer", "overlaid"]

SLOW_LIST_S = 0.05
"""When the slowest of the last refreshes of the tick's apps took longer than this (seconds, half
a tick's 100 ms budget: a tick that waits for its listings must still read Redis, plan and act in
the other half: a listing of 10,000 machines that took 35 ms to wait for made the tick ~59 ms
where planning on the newest listing read made it ~40 ms), the tick does not wait for listings:
it plans on the newest listing read of each app (at most ``max_list_age`` old) while the
refreshes run in the background. Faster
listings are waited for, so small fleets plan on listings taken during their tick. The apps are
listed concurrently, so the tick waits for all of them or none."""

SKEW_MIN_S = 1.0
"""Clock offsets below this are within the ``Date`` header's resolution and are not applied."""

FINISHED_KEEP_S = 60.0
"""A machine marked finished that no listing shows is forgotten only after this long: a listing
taken before the machine was created must not drop its mark before a newer one shows it."""

log = structlog.get_logger(__name__)


@dataclass
class _Listing:
    """One app's listing, kept as planner views (small) rather than the wire models (large)."""

    views: tuple[MachineView, ...]
    listed: Listed  # taken_at, names and ids, computed once per listing (not once per tick)

    @property
    def taken_at(self) -> float:
        return self.listed.taken_at


class Observer:
    """Builds observations; keeps the last Fly listing per app and lays the loop's ``overlay``
    and ``inflight`` (what the act step sent) over them."""

    def __init__(
        self,
        settings: Settings,
        fly: AsyncFlyClient,
        redis: aioredis.Redis,
        claims: ClaimStore,
        governor: RateGovernor,
        *,
        overlay: Overlay,
        inflight: InFlight,
        clock: Callable[[], float] = time.time,
        list_interval: float = 0.1,
        max_list_age: float = 5.0,
        slow_list_s: float = SLOW_LIST_S,
        overlay_grace: float = 30.0,
        prometheus: PrometheusReader | None = None,
        ledger: GitHubLedger | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.fly = fly
        self.redis = redis
        self.claims = claims
        self.governor = governor
        self.clock = clock
        self.list_interval = list_interval
        self.max_list_age = max_list_age
        self.slow_list_s = slow_list_s
        self.overlay_grace = overlay_grace
        self.overlay = overlay
        self.inflight = inflight
        self.prometheus = prometheus
        self.pools: dict[str, PoolSpec] = {p.name: p for p in settings.pools}
        self.apps = tuple(dict.fromkeys(a for p in settings.pools for a in p.fly_apps))
        self.queues = tuple(dict.fromkeys(q for p in settings.pools for q in p.queues))
        self.clock_offset = 0.0  # Fly's clock minus ours, as last applied
        self._listings: dict[str, _Listing] = {}
        self._view_caches: dict[str, ViewCache] = {}
        self._refreshing: dict[str, asyncio.Task[_Listing]] = {}  # app -> its refresh under way
        self.refresh_seconds: dict[str, float] = {}  # app -> how long its last refresh took
        self.oldest_listing = 0.0  # when the oldest listing the last observation used was taken
        # app -> when the listing the last observation used was taken (apps with a known listing)
        self.listings_taken: dict[str, float] = {}
        self._checked: dict[tuple[str, int], Checked] = {}  # per (job, launch) claimed
        # machine id -> (its finished mark, when first seen with that mark)
        self._finished_seen: dict[str, tuple[str, float]] = {}
        self.unknown: dict[str, str] = {}  # source -> why, for metrics and logs
        # apps whose listing fails for a reason only the operator can fix (token, missing app)
        self.misconfigured: set[str] = set()
        self._idle: dict[str, float] = {}  # worker machine id -> when it paused idle (seconds)
        self.spend = SpendLedger(redis, settings.redis.prefix) if settings.budgets.any else None
        self._slots = SlotStore(redis, settings.redis.prefix)
        self.prices = {
            p.name: cost_per_second(p.guest.cpu_kind or "shared", p.guest.cpus or 1,
                                    p.guest.memory_mb or 0, settings.price_overrides)
            for p in settings.pools
        }

    async def observe(self) -> Observation:
        """One observation."""
        now = self.clock()
        self.unknown = {}
        self.misconfigured = set()
        queues, (claims, (marks, finished)) = await asyncio.gather(
            self._queues(now), self._claims_then_marks(now)
        )
        claim_apps = [
            c.app for cs in claims.values() for c in cs or () if c.app and c.app not in self.apps
        ]
        machines, inflight = await self._machines(
            now, marks, finished, tuple(dict.fromkeys(claim_apps)), claims
        )
        await self._forget_marks_of_gone_machines(marks, finished, machines, now)
        budget = {}
        for app in self.apps:
            try:
                budget[app] = await self.governor.available("Machines_create", f"app:{app}")
            except Exception as exc:  # the governor never blocks a tick; no budget = no create
                log.warning("governor unavailable", app=app, error=str(exc))
                budget[app] = 0.0
        all_inflight = {p: inflight.get(p, 0) for p in self.pools}
        metric_values = await self._metrics()
        runners, github_queued = await self._github(claims)
        spend = await self._spend(now, machines)
        slot_jobs = await self._slot_jobs()
        return Observation(
            now=now,
            queues=queues,
            machines_by_app=machines,
            claims=claims,
            inflight=all_inflight,
            create_budget=budget,
            metric_values=metric_values,
            runners=runners,
            github_queued=github_queued,
            spend=spend,
            slot_jobs=slot_jobs,
        )

    async def _github(
        self, claims: Mapping[str, tuple[ClaimView, ...] | None]
    ) -> tuple[dict[str, RunnerView], dict[str, int | None]]:
        """GitHub runner pools: what the job events recorded of each claim's runner, and the jobs
        GitHub still has queued per pool (unknown when Redis fails)."""
        pools = [p.name for p in self.pools.values() if p.is_github]
        if self.ledger is None or not pools:
            return {}, {}
        queues = {q for p in self.pools.values() if p.is_github for q in p.queues}
        names = [c.machine_name for q in queues for c in claims.get(q) or ()]
        try:
            infos = await self.ledger.runners(names)
            counts: dict[str, int | None] = dict(await self.ledger.queued_counts(pools))
        except RedisError as exc:
            self.unknown["github"] = f"redis: {type(exc).__name__}"
            return {}, dict.fromkeys(pools)
        runners = {
            n: RunnerView(n, busy=i.job_id is not None,
                          registered_at=i.registered_at / 1000 if i.registered_at else None)
            for n, i in infos.items()
        }
        return runners, counts

    async def _slot_jobs(self) -> dict[str, int] | None:
        """Jobs run so far per warm slot (read only when a pool keeps slots): one HGETALL."""
        if not any(p.warm_slots for p in self.pools.values()):
            return {}
        try:
            bindings = await self._slots.bindings()
        except Exception as exc:
            self.unknown["redis"] = str(exc)
            return None
        return {mid: b.jobs for mid, b in bindings.items()}

    async def _spend(
        self, now: float, machines: Mapping[str, tuple[MachineView, ...] | None]
    ) -> Spend | None:
        """Accrue the listed machines' cost and read the rolling hour (only with budgets set);
        ``None`` when the ledger cannot be read (budgeted pools then launch nothing)."""
        if self.spend is None:
            return None
        started = machine_rates(
            (m for ms in machines.values() for m in ms or ()),
            self.settings.price_overrides, self.prices,
        )
        try:
            await self.spend.accrue(now, started, {p: s.app for p, s in self.pools.items()})
            return await self.spend.read(now, self.prices)
        except Exception as exc:
            self.unknown.setdefault("redis", f"spend ledger: {exc}")
            return None

    async def _queues(self, now: float) -> dict[str, QueueView | None]:
        s = self.settings.redis
        try:
            stats = await read_queue_stats(
                self.redis, s.namespace, s.prefix, self.queues, int(now * 1000)
            )
        except Exception as exc:
            self.unknown["redis"] = str(exc)
            return dict.fromkeys(self.queues)
        return {
            q: QueueView(
                name=q,
                ready=st.ready,
                delayed=st.delayed,
                in_flight=st.in_flight,
                dead=st.dead,
                claimed=st.claimed,
                oldest_ready_age_s=st.oldest_ready_age_s,
            )
            for q, st in stats.items()
        }

    async def _claims(self) -> dict[str, tuple[ClaimView, ...] | None]:
        per_job = [q for p in self.pools.values() if not p.is_worker for q in p.queues]
        try:
            recorded = await self.claims.claim_queues()
            others = sorted(recorded - set(per_job))
            found = await self.claims.list_claims([*per_job, *others], with_messages=True)
            await self.claims.forget_queues([q for q in others if not found[q]])
        except Exception as exc:
            self.unknown["redis"] = str(exc)
            return dict.fromkeys(per_job)
        pending = self.inflight.unreturned()
        # Options are checked once per claim, not once per tick, and whatever pool claimed the
        # message: a claim adopted by another pool is checked like any other.
        checked, self._checked = self._checked, {}
        out: dict[str, tuple[ClaimView, ...] | None] = {}
        for q, items in found.items():
            views = []
            for c in items:
                key = (c.redis_message_id, c.launch)
                self._checked[key] = checked[key] if key in checked else check_options(c)
                views.append(claim_view(c, self._checked[key],
                                        create_unreturned=c.machine_name in pending))
            out[q] = tuple(views)
        return out

    async def _claims_then_marks(
        self, now: float
    ) -> tuple[dict[str, tuple[ClaimView, ...] | None], tuple[dict[str, float], dict[str, float]]]:
        claims = await self._claims()
        return claims, await self._marks(now)

    async def _marks(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """The orphan marks (machine id -> when marked) and the machines whose job finished
        (machine id -> when this observer first saw it)."""
        prefix = self.settings.redis.prefix
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(orphans_key(prefix))
                pipe.hgetall(finished_machines_key(prefix))
                pipe.hgetall(idle_workers_key(prefix))
                orphans, finished, idle = await pipe.execute()
        except Exception as exc:
            self.unknown["redis"] = str(exc)
            self._idle = {}
            return {}, {}
        self._idle = {_text(k): float(v) / 1000 for k, v in idle.items()}
        # A warm slot finishes one job after another: a new mark (another value) is seen anew.
        seen, self._finished_seen = self._finished_seen, {}
        for raw, value in finished.items():
            mid, mark = _text(raw), _text(value)
            first = seen.get(mid)
            self._finished_seen[mid] = first if first is not None and first[0] == mark else (
                mark, now)
        return ({_text(k): float(v) for k, v in orphans.items()},
                {mid: at for mid, (_, at) in self._finished_seen.items()})

    async def _forget_marks_of_gone_machines(
        self, marks: Mapping[str, float], finished: Mapping[str, float],
        machines: Mapping[str, tuple[MachineView, ...] | None], now: float,
    ) -> None:
        """Orphan marks and finished marks of machines no listing shows any more are dropped, so
        the hashes do not grow forever (a finished mark only once it is ``FINISHED_KEEP_S`` old).
        Only when every app could be listed: an unreadable app may still hold the machine."""
        if not (marks or finished or self._idle) or any(ms is None for ms in machines.values()):
            return
        listed = {v.id for ms in machines.values() for v in ms or ()}
        prefix = self.settings.redis.prefix
        for key, gone in (
            (orphans_key(prefix), [mid for mid in marks if mid not in listed]),
            (idle_workers_key(prefix), [
                mid for mid, at in self._idle.items()
                if mid not in listed and now - at >= FINISHED_KEEP_S
            ]),
            (finished_machines_key(prefix), [
                mid for mid, at in finished.items()
                if mid not in listed and now - at >= FINISHED_KEEP_S
            ]),
        ):
            if not gone:
                continue
            try:
                await self.redis.hdel(key, *gone)
            except Exception as exc:  # retried next tick
                log.debug("marks not pruned", key=key, error=str(exc))

    async def _list(self, app: str, now: float, slow: bool) -> _Listing | None:
        """The listing this tick plans on: the newest one read if it is ``list_interval`` young;
        else a refresh is started (when the list budget allows one) and waited for, unless the
        listings are ``slow`` (see :data:`SLOW_LIST_S`) and the newest one read is younger
        than ``max_list_age``: then the tick plans on that one and the refresh completes in the
        background, for a later tick. ``None`` (unknown) when a refresh failed (the tick that
        learns it) or no listing younger than ``max_list_age`` can be read: never an empty one."""
        failed = self._take_refresh(app)
        if failed is not None:
            self._unreadable(app, failed)
            return None
        cached = self._listings.get(app)
        if cached is not None and now - cached.taken_at < self.list_interval:
            return cached
        young = cached is not None and now - cached.taken_at < self.max_list_age
        task = self._refreshing.get(app)
        if task is None:
            if young:
                try:
                    budget = await self.governor.available("Machines_list", f"app:{app}")
                except Exception:
                    budget = 0.0
                if budget < 1.0:  # reuse the listing rather than wait for budget in the hot path
                    return cached
            task = self._refreshing[app] = asyncio.create_task(self._refresh(app))
        if young and slow:
            return cached  # the refresh goes on in the background
        # asyncio.wait neither raises the refresh's error nor cancels it with the tick: a tick
        # that hits its deadline leaves the refresh to end for the next one.
        await asyncio.wait([task])
        if task.cancelled():  # the observer is closing
            self._refreshing.pop(app, None)
            self.unknown[f"fly:{app}"] = f"listing app {app!r} was cancelled"
            return None
        failed = self._take_refresh(app)
        if failed is not None:
            self._unreadable(app, failed)
            return None
        return self._listings.get(app)  # the listing just read, however long it took

    def _take_refresh(self, app: str) -> BaseException | None:
        """Take in the app's refresh if it has ended: its listing becomes the newest one; if it
        failed, its error is returned (a cancelled refresh changes nothing)."""
        task = self._refreshing.get(app)
        if task is None or not task.done():
            return None
        del self._refreshing[app]
        if task.cancelled():
            return None
        exc = task.exception()
        if exc is None:
            self._listings[app] = task.result()
        return exc

    def _unreadable(self, app: str, exc: BaseException) -> None:
        """The app's listing cannot be read: unknown this tick, and no older listing is kept."""
        self.unknown[f"fly:{app}"] = listing_problem(app, exc)
        if isinstance(exc, Unauthorized | Forbidden | NotFound):
            self.misconfigured.add(app)
        self._listings.pop(app, None)

    async def _refresh(self, app: str) -> _Listing:
        """List ``app`` once; its listing is taken at the time the request was sent (a listing
        may show anything that happened before, and nothing can be assumed of what came after).

        Raises:
            Exception: the listing could not be read (the call failed, or a machine of it is not
                of the expected shape: the whole listing is unknown, never a machine less).
        """
        cache = self._view_caches.get(app)
        if cache is None:
            cache = self._view_caches[app] = ViewCache(app, self.settings.scaler.id, self.pools)
        sent, began = self.clock(), time.monotonic()
        try:
            answer = await self.fly.list_machines_slim(
                app, metadata={META_SCALER: self.settings.scaler.id}
            )
            offset = self.fly.clock_offset()
            self.clock_offset = offset if abs(offset) >= SKEW_MIN_S else 0.0
            views = tuple(cache.update(answer.items, self.clock_offset))
        finally:
            self.refresh_seconds[app] = time.monotonic() - began
        return _Listing(views, Listed(sent, frozenset(v.name for v in views),
                                      frozenset(v.id for v in views)))

    def forget_listings(self) -> None:
        """Forget every listing read and drop the refreshes under way: the next observation
        waits for listings sent from now on. For a new leadership: another replica may have
        acted since, and what it created is in no overlay of ours."""
        for task in self._refreshing.values():
            task.cancel()
        self._refreshing.clear()
        self._listings.clear()

    async def aclose(self) -> None:
        """Cancel the listings still being refreshed in the background, and wait for them."""
        tasks = list(self._refreshing.values())
        self.forget_listings()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _machines(
        self,
        now: float,
        marks: Mapping[str, float],
        finished: Mapping[str, float],
        claim_apps: tuple[str, ...],
        claims: Mapping[str, tuple[ClaimView, ...] | None],
    ) -> tuple[dict[str, tuple[MachineView, ...] | None], dict[str, int]]:
        """Listings of our apps and of the apps claims were made in; the in-flight counts."""
        out: dict[str, tuple[MachineView, ...] | None] = {}
        listed: dict[str, Listed | None] = {}
        apps = (*self.apps, *claim_apps)
        slow = max((self.refresh_seconds.get(a, 0.0) for a in apps), default=0.0)
        listings = await asyncio.gather(
            *(self._list(app, now, slow > self.slow_list_s) for app in apps)
        )
        destroyed, started = self.overlay.destroyed, self.overlay.started
        self.listings_taken = {}
        for app, listing in zip(apps, listings, strict=True):
            if listing is None:
                out[app] = None
                listed[app] = None
                continue
            self.listings_taken[app] = listing.taken_at
            out[app] = self._marked(listing, marks, finished, destroyed, started)
            listed[app] = listing.listed
        claim_names = {c.machine_name for cs in claims.values() for c in cs or ()}
        inflight = self.inflight.count(listed, claim_names)
        self.oldest_listing = min(self.listings_taken.values(), default=now)
        self.overlay.prune(self.oldest_listing - self.overlay_grace)
        return out, inflight

    def _marked(
        self, listing: _Listing, marks: Mapping[str, float], finished: Mapping[str, float],
        destroyed: Mapping[str, float], started: Mapping[str, float],
    ) -> tuple[MachineView, ...]:
        """The listing's views with the orphan, finished and idle marks, and the overlay's
        destroys, confirmed exits and starts since it was taken; only those machines are copied (a
        listing of thousands of machines carries a handful of marks)."""
        ids = listing.listed.ids
        marked = {
            mid for source in (marks, finished, self._idle, destroyed, started,
                               self.overlay.exited)
            for mid in source if mid in ids
        }
        if not marked:
            return listing.views
        views = list(listing.views)
        for i, v in enumerate(views):
            if v.id not in marked:
                continue
            if v.id in marks:
                v = replace(v, orphan_marked_at=marks[v.id])
            if v.id in finished:
                v = replace(v, finished_at=finished[v.id])
            if v.id in self._idle:
                v = replace(v, idle_since=self._idle[v.id])
            views[i] = overlaid(
                v, destroyed.get(v.id), started.get(v.id), listing.taken_at,
                exited=self.overlay.exit_state(v.id, listing.taken_at),
            )
        return tuple(views)

    async def _metrics(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for pool in self.pools.values():
            if pool.scale_on != "prometheus" or not pool.query:
                continue
            if self.prometheus is None:
                values[pool.name] = None
                self.unknown["prometheus"] = "no [prometheus] url configured"
                continue
            value = await self.prometheus.query_scalar(pool.query)
            if value is None:
                self.unknown["prometheus"] = self.prometheus.last_error or "no data"
            values[pool.name] = value
        return values


def overlaid(
    v: MachineView, destroyed_at: float | None, started_at: float | None, taken_at: float,
    *, exited: str | None = None,
) -> MachineView:
    """A listed view with what act sent after its listing was ``taken_at``: a destroy makes it
    ``destroying``; an exit Fly confirmed since (``exited``: the state it exited to) makes it
    that; a start makes it ``starting`` as of that start. Its boot is timed from
    ``updated_at``, so keeping the listing's (a warm slot's last stop, maybe hours ago) would
    reap a slot just started, mid-job, as a boot that timed out."""
    if destroyed_at is not None and destroyed_at >= taken_at:
        return replace(v, state="destroying")
    if exited is not None:
        return replace(v, state=exited)
    if started_at is not None and started_at >= taken_at:
        return replace(v, state="starting", updated_at=max(v.updated_at, started_at))
    return v


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
