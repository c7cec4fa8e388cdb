"""Keeping a runner pool's demand whole by count: one waiting message or idle runner per job that
GitHub still has queued for the pool.

A message is used up by whichever job its runner runs. When that job was unknown to the scaler
(its ``queued`` webhook was lost, so it never had a message of its own), the job the message was
enqueued for is left with none: its own message id is spent, so neither a redelivery nor the
resync would write it again, and nothing would launch a runner for it. :func:`top_up` closes the
gap by count: for a pool, the jobs GitHub still has queued (the ledger's queued set) against the
pool's units of demand (messages waiting in its queue and claims whose runner started no job);
for each one missing it enqueues a replacement message ``github-job-{id}-{n}`` named after a
queued job (the name is only for people reading the queue: runners are not bound to jobs), and
for each one too many (two events raced) it withdraws the newest waiting message. The
webhook calls it for every runner pool after each ``in_progress`` (a runner of ours
may have taken a job with no message, or a runner not ours one with a message), and the resync
after listing.

The opposite error (a job in the queued set that GitHub no longer has queued, because its
``completed`` webhook was lost) would buy a runner too many; :func:`prune` drops such jobs after
a listing of their repository no longer shows them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from scaler.github.ledger import ACTOR, Ledger
from scaler.jobs.claims import ClaimStore
from scaler.jobs.keys import QueueKeys, message_record_key
from scaler.jobs.messages import MessageStore, build_message

__all__ = ["MAX_TOP_UP", "PRUNE_AFTER_S", "prune", "top_up"]

log = structlog.get_logger(__name__)

MAX_TOP_UP = 100
"""Replacement messages one call writes at most (the next call writes the rest)."""
PRUNE_AFTER_S = 120.0
"""A job queued more recently may be missing from a listing only because the listing lags."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _units(ledger: Ledger, queue: str) -> int:
    """Messages waiting in ``queue`` plus its claims whose runner has not started a job."""
    claims = (await ClaimStore(ledger.redis, ledger.namespace, ledger.prefix)
              .list_claims([queue]))[queue]
    runners = await ledger.runners([c.machine_name for c in claims])
    idle = sum(1 for c in claims
               if (r := runners.get(c.machine_name)) is None or r.job_id is None)
    waiting = int(await ledger.redis.llen(QueueKeys(ledger.namespace, ledger.prefix,
                                                    queue).ready))
    return idle + waiting


async def top_up(ledger: Ledger, pool: str, queue: str) -> int:
    """Enqueue a replacement message for each queued job of ``pool`` beyond its units of demand;
    returns how many were written."""
    queued = [int(_text(j)) for j in await ledger.redis.zrange(ledger.queued_key(pool), 0, -1)]
    missing = min(MAX_TOP_UP, len(queued) - await _units(ledger, queue))
    if missing < 0:
        # More waiting messages and idle runners than jobs (two events raced): the waiting
        # messages beyond go first; the planner withdraws idle runners beyond.
        gone = await ledger.withdraw_waiting(queue, -missing)
        if gone:
            log.info("github demand trimmed: waiting messages beyond the queued jobs withdrawn",
                     pool=pool, messages=gone)
        return 0
    if missing == 0:
        return 0
    store = MessageStore(ledger.redis, namespace=ledger.namespace, prefix=ledger.prefix)
    written = 0
    for job_id in queued:
        if written >= missing:
            break
        n = 2
        while await ledger.redis.exists(
                message_record_key(ledger.prefix, f"github-job-{job_id}-{n}")):
            n += 1
        message = build_message(
            queue=queue, actor=ACTOR, args=[], kwargs={"job_id": job_id, "replacement": n},
            options={}, message_id=f"github-job-{job_id}-{n}", now_ms=ledger.now_ms(),
        )
        if (await store.enqueue(message, digest=f"github:{job_id}:{n}")).created:
            written += 1
    if written:
        log.info("github demand topped up: a runner of ours ran a job it was not launched for",
                 pool=pool, messages=written)
    return written


async def prune(
    ledger: Ledger, pool: str, queue: str, repository: str, listed: set[int],
    still_queued: Callable[[int], Awaitable[bool]] | None = None,
) -> int:
    """Treat as completed (as their lost webhook would have: out of the queued set, one waiting
    message withdrawn each) the jobs of ``pool`` and ``repository`` queued over
    :data:`PRUNE_AFTER_S` ago that a listing of it (``listed``: the job ids it showed queued) no
    longer shows. A listing that may miss queued jobs (of queued runs only) passes
    ``still_queued(job_id)``, asked for each job it does not show. Returns how many were
    dropped."""
    cutoff = ledger.now_ms() - int(PRUNE_AFTER_S * 1000)
    old = await ledger.redis.zrangebyscore(ledger.queued_key(pool), "-inf", cutoff)
    dropped = 0
    for raw in old:
        job_id = int(_text(raw))
        if job_id in listed:
            continue
        job = await ledger.job(job_id)
        if job.get("repository") != repository:
            continue
        if still_queued is not None and await still_queued(job_id):
            continue
        await ledger.completed(job_id, None, {pool: queue})
        dropped += 1
    if dropped:
        log.info("github jobs no longer queued dropped (their completed webhook was lost)",
                 pool=pool, repository=repository, jobs=dropped)
    return dropped
