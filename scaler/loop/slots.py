"""Act on warm per-job slots: bind claimed jobs to free slots and start them, create slots.

Called by :class:`~scaler.loop.act.Executor` for :class:`~scaler.policy.types.SlotLaunch` and
:class:`~scaler.policy.types.SlotCreate`; the rules (which slots are free, replaced, missing) are
the planner's (:mod:`scaler.policy.slots`), the binding's Redis contract is
:mod:`scaler.jobs.slots`.

A slot launch claims as many messages as it has slots (the usual fenced claim script), then, for
each, binds the claim to a slot (fenced; refused if the slot's last binding is still live) and
starts the machine. A claimed job that cannot run on the template (its own size or region) gets
its own machine created, as a :class:`~scaler.policy.types.Launch` would; so does one whose slot
was taken meanwhile. A start that fails leaves the claim bound to an idle slot: the next plans
wait ``claim_grace`` for it, then replace the slot and requeue the job.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from scaler.config import PoolSpec
from scaler.jobs.slots import SlotStore
from scaler.loop.claimview import check_options, claim_view
from scaler.loop.machines import job_guest, slot_request
from scaler.policy.types import ClaimView, MachineView, SlotCreate, SlotLaunch

if TYPE_CHECKING:
    from scaler.jobs.leader import Fence
    from scaler.loop.act import ActReport, Executor

__all__ = ["create_slots", "launch_on_slots", "needs_own_machine"]

log = structlog.get_logger(__name__)


def needs_own_machine(pool: PoolSpec, claim: ClaimView) -> bool:
    """Whether a job cannot run on the pool's slots: its options are invalid (it is
    dead-lettered on the create path) or ask for another size or region than the template."""
    if claim.machine_options_error is not None:
        return True
    options = claim.machine_options
    if options is None:
        return False
    if options.region is not None and options.region != pool.region:
        return True
    return job_guest(pool, options) != pool.guest


async def launch_on_slots(
    ex: Executor, action: SlotLaunch, fence: Fence | None, now_ms: int, report: ActReport
) -> None:
    """Claim up to ``len(action.slots)`` messages and run each on a slot (or its own machine)."""
    from scaler.loop.act import CREATE_WINDOW_S

    pool = ex.pools[action.pool]
    got = await ex.claims.claim(
        action.queue, action.pool, len(action.slots), now_ms, fence, app=action.app,
        create_window_ms=int(CREATE_WINDOW_S * 1000),
    )
    views = [claim_view(c, check_options(c)) for c in got]
    slots = list(action.slots)
    await asyncio.gather(*(
        _one(ex, pool, v, slots.pop(0) if not needs_own_machine(pool, v) and slots else None,
             fence, report)
        for v in views
    ))


async def _one(
    ex: Executor, pool: PoolSpec, claim: ClaimView, slot: MachineView | None,
    fence: Fence | None, report: ActReport,
) -> None:
    if slot is not None:
        store = SlotStore(ex.redis, ex.settings.redis.prefix)
        outcome = await store.bind(pool.name, claim.queue, claim.job, claim.launch, slot.id,
                                   int(ex.clock() * 1000), fence)
        if outcome == "bound":
            await _start(ex, pool, claim, slot, fence, report)
            return
        if outcome == "gone":
            return  # finished or settled meanwhile
        log.info("slot not bound", machine=slot.id, pool=pool.name, outcome=outcome,
                 message_id=claim.message_id)
    (key,) = ex.inflight.reserve(pool.name, pool.app, ex.clock(), [claim.machine_name])
    await ex.create_for_claim(pool.name, claim, key, fence, report)


async def _start(
    ex: Executor, pool: PoolSpec, claim: ClaimView, slot: MachineView, fence: Fence | None,
    report: ActReport,
) -> None:
    sent = ex.clock()
    if claim.enqueued_at is not None:
        ex.metrics.enqueue_to_launch.labels(pool.name).observe(max(0.0, sent - claim.enqueued_at))
    try:
        await ex.call(lambda: ex.fly.start_machine(slot.app, slot.id), fence)
    except Exception as exc:
        ex.metrics.launches.labels(pool.name, "slot_start_failed").inc()
        report.errors.append(f"SlotLaunch {pool.name}: start of {slot.id} failed: {exc}")
        log.warning("slot start failed", machine=slot.id, pool=pool.name, error=str(exc),
                    message_id=claim.message_id)
        return
    ex.overlay.started[slot.id] = ex.clock()
    ex.metrics.launches.labels(pool.name, "slot").inc()
    report.launched.append(slot.name)


async def create_slots(
    ex: Executor, action: SlotCreate, fence: Fence | None, report: ActReport
) -> None:
    """Create ``action.count`` warm slots, one after the other (each spends a create token)."""
    pool = ex.pools[action.pool]
    for _ in range(action.count):
        await ex.create_unbound(pool, slot_request(pool, ex.settings), fence, report)
