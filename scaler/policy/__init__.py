"""The pure planner: ``plan(observation, pools, caps) -> Plan`` (docs/architecture.md).

No I/O, no clock, no randomness: the same observation always yields the same plan.
"""

from scaler.policy.budget import Budgets, Spend
from scaler.policy.planner import plan
from scaler.policy.types import (
    Action,
    AwaitExit,
    Caps,
    ClaimAction,
    ClaimView,
    Create,
    DeadLetter,
    Decision,
    Destroy,
    GiveBack,
    Launch,
    MachineOptions,
    MachineView,
    MarkOrphan,
    Observation,
    Plan,
    PoolPolicy,
    QueueView,
    Relaunch,
    RequeueOrDeadLetter,
    RunnerView,
    Start,
    Suspend,
    Withdraw,
)

__all__ = [
    "Action",
    "AwaitExit",
    "Budgets",
    "Caps",
    "ClaimAction",
    "ClaimView",
    "Create",
    "DeadLetter",
    "Decision",
    "Destroy",
    "GiveBack",
    "Launch",
    "MachineOptions",
    "MachineView",
    "MarkOrphan",
    "Observation",
    "Plan",
    "PoolPolicy",
    "QueueView",
    "Relaunch",
    "RequeueOrDeadLetter",
    "RunnerView",
    "Spend",
    "Start",
    "Suspend",
    "Withdraw",
    "plan",
]
