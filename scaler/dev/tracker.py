"""What ``scaler dev`` knows about machines: sampled from the in-process local Machines API.

:class:`MachineTracker` is fed snapshots of machine records (``LocalAPIServer.state.machines()``)
and keeps what the view and the summary need: machines per pool and state now, every machine ever
seen per pool, the most live at once per pool, and when the first machine of each per-job
message was created.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from scaler.loop.machines import META_JOB, META_POOL
from scaler.policy.states import is_live

__all__ = ["FINAL_STATES", "MachineLike", "MachineTracker", "SeenMachine"]

FINAL_STATES = frozenset({"stopped", "destroyed"})
"""States a machine may be left in once the work is done (stopped: a warm worker)."""


class MachineLike(Protocol):
    """The fields of a local API machine record that the tracker reads."""

    id: str
    app: str
    state: str
    created_at: float
    config: dict[str, Any]


@dataclass
class SeenMachine:
    """One machine as last seen."""

    id: str
    app: str
    pool: str
    state: str
    created_at: float
    job: str | None


def _metadata(record: MachineLike) -> Mapping[str, Any]:
    # Read config directly: the record's `metadata` property writes when the key is missing.
    md = record.config.get("metadata") if isinstance(record.config, dict) else None
    return md if isinstance(md, dict) else {}


class MachineTracker:
    """Accumulates machine samples; see the module docstring."""

    def __init__(self) -> None:
        self.seen: dict[str, SeenMachine] = {}
        self.max_live: dict[str, int] = {}

    def observe(self, records: Iterable[MachineLike]) -> None:
        """Take one sample of every machine (destroyed ones included)."""
        live: dict[str, int] = {}
        for r in records:
            md = _metadata(r)
            pool = str(md.get(META_POOL) or "(none)")
            job = md.get(META_JOB)
            self.seen[r.id] = SeenMachine(r.id, r.app, pool, r.state, float(r.created_at),
                                          str(job) if job else None)
            if is_live(r.state):
                live[pool] = live.get(pool, 0) + 1
        for pool in {m.pool for m in self.seen.values()}:
            self.max_live[pool] = max(self.max_live.get(pool, 0), live.get(pool, 0))

    def by_state(self) -> dict[str, dict[str, int]]:
        """Per pool, machines per state now (destroyed ones left out)."""
        out: dict[str, dict[str, int]] = {}
        for m in self.seen.values():
            if m.state != "destroyed":
                states = out.setdefault(m.pool, {})
                states[m.state] = states.get(m.state, 0) + 1
        return out

    def created(self) -> dict[str, int]:
        """Per pool, how many machines were ever seen."""
        out: dict[str, int] = {}
        for m in self.seen.values():
            out[m.pool] = out.get(m.pool, 0) + 1
        return out

    def not_final(self) -> list[SeenMachine]:
        """Machines neither stopped nor destroyed (still doing, or about to do, something)."""
        return [m for m in self.seen.values() if m.state not in FINAL_STATES]

    def remaining(self) -> list[SeenMachine]:
        """Machines not destroyed."""
        return [m for m in self.seen.values() if m.state != "destroyed"]

    def first_created_by_job(self) -> dict[str, float]:
        """Per per-job message (``redis_message_id``), when its first machine was created."""
        out: dict[str, float] = {}
        for m in self.seen.values():
            if m.job is not None and (m.job not in out or m.created_at < out[m.job]):
                out[m.job] = m.created_at
        return out
