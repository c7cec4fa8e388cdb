"""How the planner reads Fly machine states: live (counts against caps), gone, booting, wedged."""

from __future__ import annotations

from scaler.policy.types import MachineView

__all__ = [
    "GONE_STATES",
    "NOT_LIVE_STATES",
    "PRE_START_STATES",
    "RESTING_STATES",
    "WEDGED_AFTER_S",
    "is_gone",
    "is_live",
    "is_wedged",
]

NOT_LIVE_STATES = frozenset(
    {"stopped", "suspended", "failed", "destroying", "destroyed", "launch_failed"}
)
"""States that neither run nor start by themselves (a suspended machine resumes only when started:
the scaler's machines have no services for Fly's proxy to wake them). Every other state, including
any state Fly adds later, is live: it costs money or may start, so it counts against caps."""

RESTING_STATES = frozenset({"stopped", "suspended"})
"""A machine that can be started again: the warm tiers of worker pools."""

GONE_STATES = frozenset({"destroying", "destroyed", "launch_failed"})
"""The machine is (being) removed: it will never run its job."""

PRE_START_STATES = frozenset({"created", "creating", "starting"})
"""Booting: not yet ``started``."""

WEDGED_AFTER_S: dict[str, float] = {
    "stopping": 300.0,
    "restarting": 300.0,
    "suspending": 300.0,
    "destroying": 300.0,
    "updating": 600.0,
    "replacing": 600.0,
}
"""Transient states Fly calls wedged past these durations (docs/fly-behaviour.md, "States")."""


def is_live(state: str) -> bool:
    """Whether a machine in ``state`` counts against caps."""
    return state not in NOT_LIVE_STATES


def is_gone(state: str) -> bool:
    """Whether a machine in ``state`` is destroyed or on its way there."""
    return state in GONE_STATES


def is_wedged(machine: MachineView, now: float) -> bool:
    """Whether the machine has sat in a transient state longer than Fly considers healthy."""
    limit = WEDGED_AFTER_S.get(machine.state)
    return limit is not None and now - machine.updated_at > limit
