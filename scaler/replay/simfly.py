"""A simulated Fly for the simulator: machines, their states and timings, and the create budget.

What is modelled: each machine's states as the planner reads them (``created`` while booting,
``started``, ``stopping``, ``stopped``, ``destroying``, then gone from the listing), the local
Machines API's realistic timings (:data:`scaler.local.config.REALISTIC`: 3 s create-to-started,
1 s start, 1 s stop, 0.5 s destroy), and Fly's create rate limit per app as the client spends it
(:func:`scaler.fly.limits.client_limit_for`, a :class:`~scaler.fly.limits.TokenBucket` on the
virtual clock). Not modelled: listing lag (a listing shows every change at once), API latency,
errors, capacity refusals, and the rate limits of calls other than creates.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaler.fly.limits import TokenBucket, client_limit_for
from scaler.local.config import REALISTIC, Timings
from scaler.policy.states import NOT_LIVE_STATES
from scaler.policy.types import MachineView

__all__ = ["SimFly", "SimMachine"]


@dataclass
class SimMachine:
    """One simulated machine; ``job`` is the per-job message it runs (``None``: a worker)."""

    id: str
    name: str
    app: str
    pool: str
    state: str
    created_at: float
    updated_at: float
    size: str
    memory_mb: int
    price_per_s: float
    job: str | None = None
    queue: str | None = None
    launch: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    orphan_marked_at: float | None = None
    busy: int = 0
    idle_since: float | None = None
    generation: int = 0
    """Bumped on every state change, so a timer scheduled for an older state is ignored."""

    @property
    def live(self) -> bool:
        """Whether it counts against caps."""
        return self.state not in NOT_LIVE_STATES

    def view(self) -> MachineView:
        """The planner's view of this machine, as the observer builds it from a listing."""
        return MachineView(
            id=self.id, name=self.name, app=self.app, pool=self.pool, state=self.state,
            created_at=self.created_at, updated_at=self.updated_at, started_at=self.started_at,
            job=self.job, queue=self.queue, message_id=self.job, launch=self.launch,
            orphan_marked_at=self.orphan_marked_at, finished_at=self.finished_at,
            size=self.size, memory_mb=self.memory_mb,
        )


class SimFly:
    """The simulated machines of every app, and each app's create bucket."""

    def __init__(self, timings: Timings = REALISTIC) -> None:
        self.timings = timings
        self.machines: dict[str, SimMachine] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._next_id = 0

    def bucket(self, app: str, now: float) -> TokenBucket:
        """The app's ``Machines_create`` bucket (full at first use)."""
        b = self._buckets.get(app)
        if b is None:
            b = self._buckets[app] = TokenBucket(client_limit_for("Machines_create"), now)
        return b

    def create_budget(self, app: str, now: float) -> float:
        """Create tokens available to the planner now (never negative)."""
        return max(0.0, self.bucket(app, now).available(now))

    def new_machine(self, *, name: str, app: str, pool: str, now: float, size: str,
                    memory_mb: int, price_per_s: float) -> SimMachine:
        """A machine in ``created``; the caller schedules its boot."""
        self._next_id += 1
        m = SimMachine(id=f"sim{self._next_id:07d}", name=name, app=app, pool=pool,
                       state="created", created_at=now, updated_at=now, size=size,
                       memory_mb=memory_mb, price_per_s=price_per_s)
        self.machines[m.id] = m
        return m

    def set_state(self, m: SimMachine, state: str, now: float) -> None:
        """Move a machine to ``state`` (``"gone"`` removes it from the listing)."""
        m.generation += 1
        m.updated_at = now
        if state == "gone":
            self.machines.pop(m.id, None)
            m.state = "destroyed"
            return
        m.state = state
        if state == "started":
            m.started_at = now

    def listing(self, app: str) -> tuple[MachineView, ...]:
        """What a listing of ``app`` shows."""
        return tuple(m.view() for m in self.machines.values() if m.app == app)

    def live_counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Live machines per pool, per app, and in all."""
        pools: dict[str, int] = {}
        apps: dict[str, int] = {}
        total = 0
        for m in self.machines.values():
            if m.live:
                pools[m.pool] = pools.get(m.pool, 0) + 1
                apps[m.app] = apps.get(m.app, 0) + 1
                total += 1
        return pools, apps, total
