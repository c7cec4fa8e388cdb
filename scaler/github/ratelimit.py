"""GitHub's rate limits as one client sees them: the budget it reports, and when to send again.

Every answer carries the primary budget (``x-ratelimit-limit``, ``-remaining``, ``-used``,
``-reset`` in epoch seconds, ``-resource``); :class:`RateGate` keeps the latest per resource, and
:attr:`RateGate.budget` (the ``core`` one) is what a metric reads. A refusal is a 429, or a 403
that says it is one (a ``retry-after`` header, ``x-ratelimit-remaining: 0``, or a message naming a
rate limit); any other 403 is a permission problem and is not retried. How long to hold back
follows GitHub's documented order: ``retry-after`` seconds when sent; else until
``x-ratelimit-reset`` when the budget is spent; else (a secondary limit that says nothing) one
minute, doubling for each refusal in a row up to :data:`SECONDARY_MAX_WAIT_S`.

The gate also holds back *before* sending: while a hold runs, or while the ``core`` budget is
spent and its reset has not come, :meth:`RateGate.ready_at` is in the future, so concurrent calls
wait for the same moment instead of each discovering the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "RESET_SLACK_S",
    "SECONDARY_MAX_WAIT_S",
    "SECONDARY_MIN_WAIT_S",
    "RateBudget",
    "RateGate",
    "Refusal",
]

SECONDARY_MIN_WAIT_S = 60.0
SECONDARY_MAX_WAIT_S = 15 * 60.0
RESET_SLACK_S = 1.0
"""Added to ``x-ratelimit-reset``: GitHub's clock and ours may disagree by a little."""


@dataclass(frozen=True, slots=True)
class RateBudget:
    """One primary rate-limit budget as GitHub last reported it."""

    resource: str
    limit: int
    remaining: int
    used: int | None
    reset_at: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """A rate-limited answer: hold every call back until ``until`` (epoch seconds)."""

    status_code: int
    message: str | None
    until: float


def _int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _budget(headers: Mapping[str, str]) -> RateBudget | None:
    limit, remaining = _int(headers, "x-ratelimit-limit"), _int(headers, "x-ratelimit-remaining")
    reset = _int(headers, "x-ratelimit-reset")
    if limit is None or remaining is None or reset is None:
        return None
    return RateBudget(
        resource=headers.get("x-ratelimit-resource", "core"),
        limit=limit,
        remaining=remaining,
        used=_int(headers, "x-ratelimit-used"),
        reset_at=float(reset),
    )


def _is_refusal(status_code: int, headers: Mapping[str, str], message: str | None) -> bool:
    if status_code == 429:
        return True
    if status_code != 403:
        return False
    return (
        "retry-after" in headers
        or _int(headers, "x-ratelimit-remaining") == 0
        or (message is not None and "rate limit" in message.lower())
    )


class RateGate:
    """The rate-limit state of one credential (an installation token, a PAT, or the App's JWT).

    ``headers`` passed in must look names up case-insensitively (``httpx.Headers`` does).
    """

    def __init__(self) -> None:
        self._budgets: dict[str, RateBudget] = {}
        self._held_until = 0.0
        self._strikes = 0
        self.last_refusal: Refusal | None = None

    @property
    def budget(self) -> RateBudget | None:
        """The ``core`` budget as last reported (``None`` before any answer carried one)."""
        return self._budgets.get("core")

    def budgets(self) -> dict[str, RateBudget]:
        """Every budget reported so far, by resource."""
        return dict(self._budgets)

    def ready_at(self, now: float) -> float:
        """When the next call may be sent (``now`` or earlier means at once)."""
        ready = self._held_until
        core = self.budget
        if core is not None and core.remaining <= 0 and core.reset_at + RESET_SLACK_S > now:
            ready = max(ready, core.reset_at + RESET_SLACK_S)
        return ready

    def observe(
        self, status_code: int, headers: Mapping[str, str], message: str | None, now: float
    ) -> Refusal | None:
        """Record an answer; a :class:`Refusal` when it was a rate limit (then hold back)."""
        budget = _budget(headers)
        if budget is not None:
            self._budgets[budget.resource] = budget
        if not _is_refusal(status_code, headers, message):
            self._strikes = 0
            return None
        self._strikes += 1
        retry_after = _int(headers, "retry-after")
        if retry_after is not None and retry_after >= 0:
            until = now + retry_after
        elif budget is not None and budget.remaining <= 0:
            until = max(now, budget.reset_at + RESET_SLACK_S)
        else:
            wait = SECONDARY_MIN_WAIT_S * 2.0 ** (self._strikes - 1)
            until = now + min(wait, SECONDARY_MAX_WAIT_S)
        self._held_until = max(self._held_until, until)
        self.last_refusal = Refusal(status_code, message, self._held_until)
        return self.last_refusal
