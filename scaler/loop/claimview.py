"""A stored claim as the planner sees it: :func:`claim_view` turns a
:class:`~scaler.jobs.claims.Claim` into the :class:`~scaler.policy.types.ClaimView` that also
carries what the act step needs to create its machine, so a plan's claim actions are
self-contained.

The message's own machine options are checked by :func:`check_options`, through the one validator
(:func:`scaler.jobs.enqueue.validate_machine_options`, which enqueues use too). An error is not
acted on here: it travels in the view, and the planner dead-letters the message.
"""

from __future__ import annotations

import math

from scaler.jobs.claims import Claim
from scaler.jobs.enqueue import validate_machine_options
from scaler.policy.types import ClaimView, MachineOptions

__all__ = ["Checked", "check_options", "claim_view"]

Checked = tuple[MachineOptions | None, str | None]
"""The message's own machine options, validated, and why they cannot be honoured (``None``: they
can)."""

_SIZE_KEYS = ("size", "cpus", "memory_mb", "cpu_kind")


def check_options(claim: Claim) -> Checked:
    """Validate the claimed message's own machine options (``options.fly_machine``). Options that
    name no size keep the pool's size; no options at all: ``(None, None)``, the pool's machine."""
    if not claim.message:
        return None, "message body is missing or not valid JSON"
    options = claim.machine_options
    if not options:
        return None, None
    try:
        normalized = validate_machine_options(options)
    except ValueError as exc:
        return None, f"invalid machine options: {exc}"
    sized = any(options.get(k) is not None for k in _SIZE_KEYS)
    return MachineOptions(
        cpu_kind=normalized["cpu_kind"] if sized else None,
        cpus=normalized["cpus"] if sized else None,
        memory_mb=normalized["memory_mb"] if sized else None,
        region=normalized.get("region"),
    ), None


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


def claim_view(claim: Claim, checked: Checked, *, create_unreturned: bool = False) -> ClaimView:
    """``claim`` as the planner sees it. ``checked``: :func:`check_options` of it;
    ``create_unreturned``: this process's create of its machine has not returned (the claim's
    create is then pending for as long as it runs, whatever its recorded window says)."""
    options, error = checked
    return ClaimView(
        queue=claim.queue,
        job=claim.redis_message_id,
        message_id=claim.message_id,
        pool=claim.pool,
        launch=claim.launch,
        claimed_at=claim.claimed_at / 1000.0,
        machine_name=claim.machine_name,
        state="running" if claim.state == "running" else "claimed",
        machine_id=claim.machine_id,
        machine_options_error=error,
        updated_at=_seconds(claim.updated_at),
        app=claim.app,
        create_pending_until=math.inf if create_unreturned else _seconds(claim.create_until),
        create_attempts=claim.attempts,
        create_failed_at=_seconds(claim.failed_at),
        create_refused=claim.refused,
        machine_options=options,
        enqueued_at=_seconds(claim.enqueued_at),
    )
