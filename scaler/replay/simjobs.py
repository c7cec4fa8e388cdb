"""The simulator's world besides Fly: the trace's jobs, their claims, and the chart's series."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scaler.policy.types import ClaimView, MachineOptions

__all__ = ["Sampler", "SimClaim", "SimJob", "machine_options"]


@dataclass
class SimJob:
    """One message of the trace."""

    id: str
    queue: str
    enqueued_at: float
    run_s: float
    outcome: str
    options: MachineOptions | None
    launches: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    ended: str | None = None


@dataclass
class SimClaim:
    """A claim as the claim store holds it."""

    job: SimJob
    pool: str
    launch: int
    claimed_at: float
    machine_name: str
    machine_id: str | None = None
    updated_at: float | None = None
    running: bool = False

    def view(self) -> ClaimView:
        """The planner's view, as :mod:`scaler.loop.claimview` builds it."""
        return ClaimView(
            queue=self.job.queue, job=self.job.id, message_id=self.job.id, pool=self.pool,
            launch=self.launch, claimed_at=self.claimed_at, machine_name=self.machine_name,
            state="running" if self.running else "claimed", machine_id=self.machine_id,
            updated_at=self.updated_at, machine_options=self.job.options,
            enqueued_at=self.job.enqueued_at,
        )


def machine_options(raw: dict[str, Any]) -> MachineOptions | None:
    """A trace's ``fly_machine`` options as the planner's :class:`MachineOptions`."""
    if not raw:
        return None
    cpus, mem = raw.get("cpus"), raw.get("memory_mb")
    return MachineOptions(
        cpu_kind=raw.get("cpu_kind") if cpus is not None else None,
        cpus=cpus if isinstance(cpus, int) else None,
        memory_mb=mem if isinstance(mem, int) else None,
        region=raw.get("region") if isinstance(raw.get("region"), str) else None,
    )


@dataclass
class Sampler:
    """Time series for the chart, and the time-weighted sums behind the means."""

    times: list[float] = field(default_factory=list)
    depth: dict[str, list[int]] = field(default_factory=dict)
    machines: dict[str, list[int]] = field(default_factory=dict)
