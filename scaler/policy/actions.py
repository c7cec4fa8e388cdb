"""The planner's answer: the actions of a :class:`Plan`, and the :class:`Decision` that explains
each thing it did or did not do. Frozen and slotted like the rest of the vocabulary
(:mod:`scaler.policy.types`, which re-exports everything here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:
    from scaler.policy.types import ClaimView, MachineView

__all__ = [
    "Action",
    "AwaitExit",
    "ClaimAction",
    "Create",
    "DeadLetter",
    "Decision",
    "Destroy",
    "GiveBack",
    "Launch",
    "MarkOrphan",
    "Outcome",
    "Plan",
    "Relaunch",
    "RequeueOrDeadLetter",
    "SlotCreate",
    "SlotLaunch",
    "Start",
    "Suspend",
    "Withdraw",
]

Outcome = Literal["acted", "not_taken"]


def _empty() -> Mapping[str, int]:
    return {}


# --------------------------------------------------------------------------------------------------
# Outputs: actions


@dataclass(frozen=True, slots=True)
class Launch:
    """Per-job: claim up to ``count`` ready messages of ``queue`` and create one machine each."""

    pool: str
    app: str
    queue: str
    count: int
    reason: str = "demand"


@dataclass(frozen=True, slots=True)
class Relaunch:
    """Per-job: create the claim's machine again under the same deterministic name.

    Used when a claim has no machine id and no visible machine past its grace (e.g. the scaler
    stopped between claim and create). The create is idempotent by name.
    """

    pool: str
    app: str
    claim: ClaimView
    reason: str = "no_machine"


@dataclass(frozen=True, slots=True)
class GiveBack:
    """Per-job: return the claimed message to its queue without counting a failed launch.

    ``requires_destroy`` names a machine destroyed in the same plan: give back only after that
    destroy succeeded.
    """

    pool: str
    claim: ClaimView
    reason: str
    requires_destroy: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Per-job: move the claimed message to the dead-letter queue with ``reason`` (the text kept
    with the message); ``cause`` is the short label it is counted under (``"invalid_options"``,
    ``"fly_refused"``).

    ``requires_destroy`` as for :class:`GiveBack`.
    """

    pool: str
    claim: ClaimView
    reason: str
    requires_destroy: str | None = None
    cause: str = "invalid_options"


@dataclass(frozen=True, slots=True)
class RequeueOrDeadLetter:
    """Per-job: the claim's machine is gone (or being destroyed) without an ack.

    The act step gives the message back unless ``claim.launch >= max_launches``, in which case it
    dead-letters it. ``requires_destroy`` as for :class:`GiveBack`. The act step should make the
    release conditional on the claim still existing (the job may have acked meanwhile).
    """

    pool: str
    claim: ClaimView
    reason: str
    max_launches: int
    requires_destroy: str | None = None


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Per-job (GitHub runners): end the claim and drop its message, which stands for demand that
    is gone (a job cancelled or taken by another runner). ``requires_destroy`` as for
    :class:`GiveBack`: the runner machine goes first."""

    pool: str
    claim: ClaimView
    reason: str
    requires_destroy: str | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """Worker pool: create ``count`` new worker machines."""

    pool: str
    app: str
    count: int
    reason: str = "scale_up"


@dataclass(frozen=True, slots=True)
class Start:
    """Worker pool: start a stopped (warm) machine; preferred over :class:`Create`."""

    pool: str
    machine: MachineView
    reason: str = "scale_up"


@dataclass(frozen=True, slots=True)
class Suspend:
    """Worker pool: suspend an idle started worker (its memory kept), the fastest warm tier."""

    pool: str
    machine: MachineView
    reason: str = "idle"


@dataclass(frozen=True, slots=True)
class SlotLaunch:
    """Per-job: claim up to ``len(slots)`` ready messages of ``queue``, bind each to one of the
    free warm ``slots`` and start it (no create token). A claimed job whose own machine options
    differ from the template gets its own machine created instead."""

    pool: str
    app: str
    queue: str
    slots: tuple[MachineView, ...]
    reason: str = "demand"


@dataclass(frozen=True, slots=True)
class SlotCreate:
    """Per-job: create ``count`` warm slots (stopped machines of the pool's template)."""

    pool: str
    app: str
    count: int
    reason: str = "warm_slots"


@dataclass(frozen=True, slots=True)
class Destroy:
    """Destroy a machine; ``force`` kills it first (needed unless it is stopped).

    ``pool`` is ``None`` for a machine whose pool is unknown.
    """

    pool: str | None
    machine: MachineView
    reason: str
    force: bool


@dataclass(frozen=True, slots=True)
class MarkOrphan:
    """Write ``fly_scaler_orphan_at = now`` into the machine's metadata; a later plan destroys it
    once ``orphan_grace_s`` has passed and it is still an orphan."""

    pool: str | None
    machine: MachineView
    reason: str


@dataclass(frozen=True, slots=True)
class AwaitExit:
    """Per-job: the machine's job finished and it is exiting by itself (it still counts against
    the caps). Ask Fly to tell as soon as it is stopped or destroyed, so its cap slot (or, for a
    warm slot, the slot itself) is reused without waiting for the next listing. Changes nothing
    on the machine; at most one such watch per machine runs at a time."""

    pool: str | None
    machine: MachineView
    reason: str = "job_finished"


Action = (
    Launch
    | Relaunch
    | GiveBack
    | DeadLetter
    | RequeueOrDeadLetter
    | Withdraw
    | Create
    | Start
    | Suspend
    | Destroy
    | MarkOrphan
    | SlotLaunch
    | SlotCreate
    | AwaitExit
)
"""Any planned action; every one has ``pool`` and ``reason``."""
ClaimAction = Relaunch | GiveBack | DeadLetter | RequeueOrDeadLetter | Withdraw
"""An action on one per-job claim; the planner plans at most one per claim."""
A = TypeVar("A")


# --------------------------------------------------------------------------------------------------
# Outputs: decisions and the plan


@dataclass(frozen=True, slots=True)
class Decision:
    """Why the planner did, or did not do, something for a pool.

    Attributes:
        pool: the pool; ``None`` for machines or claims whose pool is unknown.
        kind: ``"launch"``, ``"relaunch"``, ``"create"``, ``"start"``, ``"scale"``, ``"reap"``,
            ``"mark_orphan"``, ``"requeue"``, ``"dead_letter"``, ``"give_back"``, ``"wait"``,
            ``"skip"``.
        outcome: ``"acted"`` or ``"not_taken"``.
        reason: short machine-readable cause (``"cap_pool"``, ``"cap_app"``, ``"cap_global"``,
            ``"rate_limit"``, ``"budget"``, ``"unknown_data"``, ``"no_demand"``, ``"boot_timeout"``,
            ``"max_runtime"``, ``"failed"``, ``"stopped"``, ``"stuck"``, ``"orphan"``, ...).
        count: how many units (machines, messages, claims) the decision covers.
        inputs: the numbers that led to it.
        message: one human sentence.
    """

    pool: str | None
    kind: str
    outcome: Outcome
    reason: str
    count: int
    inputs: Mapping[str, float | int | str]
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do this tick, and why.

    Attributes:
        actions: in execution order (for one claim, its machine's Destroy comes before the claim
            action that ``requires_destroy`` it).
        decisions: at least one per configured pool, including the decisions not taken.
        desired: per configured pool, the number of live machines the pool wants.
        wake_at: the earliest time a decision not taken may change by itself (a claim's grace or
            backoff ends, a pending create's window closes); ``None`` when nothing waits on time.
    """

    actions: tuple[Action, ...] = ()
    decisions: tuple[Decision, ...] = ()
    desired: Mapping[str, int] = field(default_factory=_empty)
    wake_at: float | None = None

    def of_type(self, kind: type[A]) -> tuple[A, ...]:
        """The actions of one class, in plan order."""
        return tuple(a for a in self.actions if isinstance(a, kind))

    def decisions_for(self, pool: str | None) -> tuple[Decision, ...]:
        """The decisions about one pool."""
        return tuple(d for d in self.decisions if d.pool == pool)

    def not_taken(self) -> tuple[Decision, ...]:
        """The decisions not acted on."""
        return tuple(d for d in self.decisions if d.outcome == "not_taken")
