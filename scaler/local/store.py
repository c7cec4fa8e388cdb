"""The in-memory state of the local Machines API: apps (each indexing its machines and volumes),
request counters, the log of create calls, and the waiters that ``/wait`` parks on."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any

from scaler.local.errors import not_found_app, not_found_machine
from scaler.local.model import AppRecord, MachineRecord

__all__ = ["NOT_LIVE", "Store"]

NOT_LIVE = frozenset({"stopped", "failed", "destroying", "destroyed"})
"""States in which a machine neither runs nor starts by itself (every other state is live)."""


class Store:
    """Apps, machines and volumes, plus counters. Read it from tests for assertions.

    Everything is mutated on the server's event loop; readers in other threads should use
    the snapshot helpers (:meth:`machines`, :meth:`counts`), which copy before iterating.
    """

    def __init__(self, recent_requests: int = 10_000) -> None:
        self.apps: dict[str, AppRecord] = {}
        self.machines_by_id: dict[str, MachineRecord] = {}
        self.requests: Counter[tuple[str, int]] = Counter()
        """Requests answered, by (operation, HTTP status)."""
        self.recent: deque[tuple[float, str, int]] = deque(maxlen=recent_requests)
        """The last requests as (monotonic time, operation, HTTP status)."""
        self.faults_injected: Counter[str] = Counter()
        self.live: Counter[str] = Counter()
        """Live machines per app now (see :data:`NOT_LIVE`)."""
        self.peak_live: Counter[str] = Counter()
        """The most live machines each app ever had at once, counted at every state change."""
        self.creates: deque[dict[str, Any]] = deque(maxlen=recent_requests)
        """The last create calls: when they arrived and were answered (monotonic; ``None`` while
        unanswered), status, User-Agent, machine name, metadata, the machine it created."""
        self._waiters: dict[str, list[asyncio.Event]] = {}

    # -- lookups ------------------------------------------------------------------------------

    def app(self, name: str) -> AppRecord:
        """The app, or a 404 :class:`APIError`."""
        app = self.apps.get(name)
        if app is None:
            raise not_found_app()
        return app

    def machine(self, app_name: str, machine_id: str) -> MachineRecord:
        """The machine (destroyed ones included), or a 404."""
        app = self.app(app_name)
        machine = app.machines.get(machine_id)
        if machine is None:
            raise not_found_machine()
        return machine

    def machines(self, app_name: str | None = None) -> list[MachineRecord]:
        """A snapshot list of machines (of one app, or all), destroyed ones included."""
        if app_name is None:
            return list(self.machines_by_id.values())
        app = self.apps.get(app_name)
        return list(app.machines.values()) if app else []

    def counts(self) -> dict[str, int]:
        """Machines per state."""
        return dict(Counter(m.state for m in list(self.machines_by_id.values())))

    # -- bookkeeping --------------------------------------------------------------------------

    def add_machine(self, machine: MachineRecord) -> None:
        """Index a new machine."""
        self.apps[machine.app].machines[machine.id] = machine
        self.machines_by_id[machine.id] = machine
        self.state_changed(machine.app, None, machine.state)

    def state_changed(self, app: str, old: str | None, new: str) -> None:
        """Count a machine of ``app`` going from ``old`` (None: new) to ``new``."""
        was = old is not None and old not in NOT_LIVE
        now = new not in NOT_LIVE
        if was != now:
            self.live[app] += 1 if now else -1
            if self.live[app] > self.peak_live[app]:
                self.peak_live[app] = self.live[app]

    def forget_machine(self, machine: MachineRecord) -> None:
        """Drop a (destroyed) machine entirely."""
        app = self.apps.get(machine.app)
        if app is not None:
            app.machines.pop(machine.id, None)
        self.machines_by_id.pop(machine.id, None)

    def record_request(self, now: float, operation: str, status: int) -> None:
        """Count one answered request."""
        self.requests[(operation, status)] += 1
        self.recent.append((now, operation, status))

    def record_create(self, facts: dict[str, Any], agent: str, arrived: float) -> dict[str, Any]:
        """Log one create call as it arrives (``facts``: its name and metadata); the caller fills
        in ``status``, ``answered`` and ``machine_id`` on the returned entry once it answers."""
        entry = {"t": arrived, "answered": None, "status": None, "agent": agent,
                 "machine_id": None, **facts}
        self.creates.append(entry)
        return entry

    def create_log(self) -> list[dict[str, Any]]:
        """The create calls logged, oldest first (``GET /_admin/creates``)."""
        return [dict(c) for c in list(self.creates)]

    def request_log(self, operation: str | None = None) -> list[dict[str, Any]]:
        """The last requests (of one operation), oldest first (``GET /_admin/requests``)."""
        return [
            {"t": t, "operation": op, "status": status}
            for t, op, status in list(self.recent)
            if operation is None or op == operation
        ]

    def summary(self) -> dict[str, Any]:
        """Counters for ``GET /_admin/state``: requests by operation and status, 429s by
        operation, create calls by User-Agent, faults injected."""
        by_op: dict[str, dict[str, int]] = {}
        limited: Counter[str] = Counter()
        for (op, status), n in list(self.requests.items()):
            by_op.setdefault(op, {})[str(status)] = n
            if status == 429:
                limited[op] += n
        return {
            "apps": len(self.apps),
            "machines": self.counts(),
            "requests": by_op,
            "rate_limited": dict(limited),
            "live": {app: n for app, n in list(self.live.items()) if n},
            "peak_live": dict(self.peak_live),
            "creates_by_agent": dict(Counter(c["agent"] for c in list(self.creates))),
            "faults_injected": dict(self.faults_injected),
        }

    # -- waiting ------------------------------------------------------------------------------

    def notify(self, machine_id: str) -> None:
        """Wake everything waiting on a machine (its state or version changed)."""
        waiters = self._waiters.pop(machine_id, None)
        if waiters:
            for event in waiters:
                event.set()

    def waiter(self, machine_id: str) -> asyncio.Event:
        """An event set at the machine's next change."""
        event = asyncio.Event()
        self._waiters.setdefault(machine_id, []).append(event)
        return event

    def drop_waiter(self, machine_id: str, event: asyncio.Event) -> None:
        """Unregister a waiter that timed out."""
        waiters = self._waiters.get(machine_id)
        if waiters and event in waiters:
            waiters.remove(event)
            if not waiters:
                del self._waiters[machine_id]
