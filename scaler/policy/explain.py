"""Decisions that explain themselves: reason wording and the collector that tallies them.

Per-machine and per-claim outcomes are tallied per (pool, kind, outcome, reason) so a plan over
10,000 machines carries a handful of decisions, each with a count, not 10,000.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scaler.policy.types import Decision, Outcome

__all__ = ["REASON_TEXT", "Tally", "describe"]

REASON_TEXT: Mapping[str, str] = {
    "cap_pool": "pool cap",
    "cap_app": "app cap",
    "cap_global": "global cap",
    "rate_limit": "create rate limit",
    "budget": "cost budget for the rolling hour reached",
    "unknown_data": "data unknown",
    "no_demand": "no demand",
    "boot_timeout": "never started before its boot timeout",
    "max_runtime": "ran past its max runtime",
    "failed": "failed",
    "stopped": "stopped",
    "stuck": "wedged in a transient state",
    "orphan": "orphan past its grace",
    "finished_lingering": "its job finished but it did not exit within the orphan grace",
    "no_claim": "no claim for its job (finished, or lost)",
    "unknown_pool": "pool unknown",
    "machine_gone": "machine gone without an ack",
    "no_machine": "claim has no machine",
    "claim_grace": "machine not visible yet (within grace)",
    "create_pending": "its create may still be under way",
    "backoff": "backing off after a create that made no machine",
    "unlisted": "created, but no listing shows it past the grace",
    "pool_gone": "no per-job pool serves its queue any more",
    "pool_gone_running": "its pool is gone; the job runs to its end",
    "over_cap": "a cap was lowered below what is live",
    "orphan_grace": "orphan within its grace",
    "invalid_options": "invalid machine options",
    "fly_refused": "Fly refused the job's own machine",
    "surplus": "an idle GitHub runner beyond the jobs GitHub still has queued",
    "idle_timeout": "a GitHub runner given no job within runner_idle_timeout",
    "runner_surplus": "waiting messages beyond the jobs GitHub has queued for idle runners",
    "runner_just_online": "a surplus GitHub runner only just online (GitHub may be handing it a "
                          "job)",
    "idle": "idle worker kept in the suspended tier",
    "suspended": "suspended, and not kept in a warm tier",
}
"""Human wording for each machine-readable reason."""


_NOUNS: Mapping[str, str] = {
    "reap": "destroyed",
    "requeue": "requeued or dead-lettered",
    "dead_letter": "dead-lettered",
    "give_back": "gave back",
    "relaunch": "relaunched",
    "withdraw": "withdrew",
    "suspend": "suspended",
}


def describe(reason: str) -> str:
    """The human wording of a reason (the reason itself when it has none)."""
    return REASON_TEXT.get(reason, reason)


_Key = tuple[str | None, str, Outcome, str]


@dataclass(slots=True)
class Tally:
    """Collects decisions; ``count`` aggregates repeated per-machine or per-claim outcomes."""

    _single: list[Decision] = field(default_factory=list)
    _counts: dict[_Key, int] = field(default_factory=dict)

    def add(self, decision: Decision) -> None:
        """Record one fully formed decision."""
        self._single.append(decision)

    def count(
        self, pool: str | None, kind: str, reason: str, outcome: Outcome = "acted", n: int = 1
    ) -> None:
        """Count ``n`` more units of the (pool, kind, outcome, reason) decision."""
        key = (pool, kind, outcome, reason)
        self._counts[key] = self._counts.get(key, 0) + n

    def decisions(self) -> tuple[Decision, ...]:
        """All decisions: the single ones first, then one per tallied key, in first-seen order."""
        tallied = []
        for (pool, kind, outcome, reason), n in self._counts.items():
            label = pool if pool is not None else "(unknown pool)"
            noun = _NOUNS.get(kind, kind.replace("_", " "))
            if kind == "wait":
                text = f"{label}: waiting on {n} claim(s): {describe(reason)}"
            elif kind == "mark_orphan":
                text = (f"{label}: watching {n} machine(s) with {describe(reason)}; destroyed if "
                        "still there after the orphan grace")
            elif outcome == "acted":
                text = f"{label}: {noun} {n} ({describe(reason)})"
            else:
                text = f"{label}: not yet: {noun} {n} ({describe(reason)})"
            tallied.append(
                Decision(
                    pool=pool,
                    kind=kind,
                    outcome=outcome,
                    reason=reason,
                    count=n,
                    inputs={"count": n},
                    message=text,
                )
            )
        return (*self._single, *tallied)
