"""The plan under construction: actions in order; each machine and claim touched at most once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scaler.policy.explain import Tally
from scaler.policy.types import (
    Action,
    ClaimAction,
    Destroy,
    MachineView,
    MarkOrphan,
    Plan,
    Start,
    Suspend,
)

__all__ = ["PlanBuilder"]


@dataclass(slots=True)
class PlanBuilder:
    """Accumulates actions and decisions; refuses a second action on one machine or claim."""

    actions: list[Action] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    machines: set[str] = field(default_factory=set)
    claims: set[str] = field(default_factory=set)
    wake_at: float | None = None

    def touched(self, machine: MachineView) -> bool:
        """Whether an action already targets this machine."""
        return machine.id in self.machines

    def destroy(self, pool: str | None, m: MachineView, reason: str, force: bool) -> bool:
        """Plan a Destroy unless the machine is already taken; True if planned."""
        if m.id in self.machines:
            return False
        self.machines.add(m.id)
        self.actions.append(Destroy(pool, m, reason, force))
        self.tally.count(pool, "reap", reason)
        return True

    def suspend(self, pool: str, m: MachineView) -> bool:
        """Plan a Suspend unless the machine is already taken; True if planned."""
        if m.id in self.machines:
            return False
        self.machines.add(m.id)
        self.actions.append(Suspend(pool, m))
        self.tally.count(pool, "suspend", "idle")
        return True

    def mark_orphan(self, pool: str | None, m: MachineView, reason: str) -> bool:
        """Plan a MarkOrphan unless the machine is already taken; True if planned."""
        if m.id in self.machines:
            return False
        self.machines.add(m.id)
        self.actions.append(MarkOrphan(pool, m, reason))
        self.tally.count(pool, "mark_orphan", reason)
        return True

    def start(self, pool: str, m: MachineView) -> bool:
        """Plan a Start unless the machine is already taken; True if planned."""
        if m.id in self.machines:
            return False
        self.machines.add(m.id)
        self.actions.append(Start(pool, m))
        return True

    def claim_action(self, action: ClaimAction, kind: str) -> bool:
        """Plan one action on a claim unless the claim already has one; True if planned."""
        job = action.claim.job
        if job in self.claims:
            return False
        self.claims.add(job)
        self.actions.append(action)
        self.tally.count(action.pool, kind, action.reason)
        return True

    def wake(self, at: float) -> None:
        """Something waits until ``at`` (a grace, a backoff): plan again no later than that."""
        if at != float("inf") and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    def add(self, action: Action) -> None:
        """Plan an action that targets neither a machine nor a claim (Launch, Create)."""
        self.actions.append(action)

    def build(self, desired: Mapping[str, int]) -> Plan:
        """The finished, immutable plan."""
        return Plan(tuple(self.actions), self.tally.decisions(), dict(desired), self.wake_at)
