"""Job claims: which ready dramatiq message is bound to which per-job machine.

Key and identity contract (other modules and the in-machine runner depend on it exactly):

- dramatiq keys (namespace ``ns``, default ``"dramatiq"``; queue ``q``): ready list ``{ns}:{q}``,
  bodies ``{ns}:{q}.msgs``, dead letters ``{ns}:{q}.XQ`` (zset) and ``{ns}:{q}.XQ.msgs``.
- Scaler keys (prefix ``p``, default ``"fly-scaler"``):

  - ``{p}:claims:{q}`` HASH: redis_message_id -> JSON ``{"pool", "queue", "app", "message_id",
    "launch" (1-based), "claimed_at" (ms), "enqueued_at" (ms, the message's), "machine_name",
    "state": "claimed"|"running", "machine_id", "updated_at" (ms), "started_at" (ms),
    "heartbeat_at" (ms), "create_until" (ms), "attempts", "failed_at" (ms), "last_error",
    "refused"}``: ``machine_id`` and ``updated_at`` once the create returned (only that machine's
    runner may then take the job), ``started_at`` and ``heartbeat_at`` once the runner has
    started; ``create_until`` while a create is pending (no replica relaunches the claim before
    it), ``attempts`` creates tried for this launch, ``failed_at``/``last_error`` after a create
    that made no machine (the planner backs off from ``failed_at``), ``refused`` when Fly refused
    it for good (its reason: the planner dead-letters a job whose own options shaped the
    machine). Only the runner of the claim's own ``launch`` may take or end it.
  - ``{p}:claim-queues`` SET: every queue with claims, so claims of a queue that no pool serves
    any more are still found (:func:`claim_queues_key`).
  - ``{p}:launches:{q}`` HASH: dramatiq message_id -> launches so far; deleted when the job
    finishes or is dead-lettered. A dramatiq retry keeps its message_id but the runner completes
    the claim of the failed attempt, so this counts machines that died, not dramatiq retries.
  - ``{p}:dead-reasons:{q}`` HASH: redis_message_id -> JSON ``{"reason", "at", "message_id",
    "launches", "cause"}`` for every message dead-lettered by a claim script: by the scaler, by
    the claim itself (``max_age``), by the runner's set-up failure (``setup``) or by dramatiq
    giving up in the runner (``job_failed``, the job's error). The message JSON itself is never
    rewritten.
  - ``{p}:wake`` pub/sub channel: a queue name published there wakes the scaler
    (:func:`wake_channel`).

- Machine name of a claim: ``f"{pool}-{redis_message_id without dashes}-{launch}"``, the
  idempotency key of the create call (:func:`machine_name`).
- Env of a per-job machine (:func:`binding_env`): ``FLY_SCALER_QUEUE``, ``FLY_SCALER_MESSAGE``
  (redis_message_id), ``FLY_SCALER_NAMESPACE``, ``FLY_SCALER_PREFIX`` and ``FLY_SCALER_LAUNCH``.
  The Redis URL is the app's own (``REDIS_URL`` from the pool's env or the app's Fly secrets): it
  never goes through the scaler.

The scripts themselves are in :mod:`scaler.jobs.claim_scripts` (the runner's finish and abort in
:mod:`scaler.jobs.runner_claim`), each after one shared guard
(:data:`~scaler.jobs.claim_scripts.GUARD_LUA`); those that end a job record how it ended
(:mod:`scaler.jobs.outcomes`). Every script the scaler calls (claim, give back,
dead-letter, requeue, create state) also starts with ``scaler.jobs.leader.FENCE_LUA`` and raises
:class:`scaler.jobs.leader.Fenced` when a newer leader exists.
Everything is O(1) per message touched: nothing here scans a queue.

The record itself is :class:`~scaler.jobs.claim_record.Claim`; this module is the scaler's side,
:class:`ClaimStore`. It stays light to import all the same (apps and the runner read the key
helpers it re-exports): ``scaler.jobs.leader`` (structlog) and ``redis.asyncio`` are imported only
when a store is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from scaler.jobs.claim_record import Claim, binding_env, machine_name
from scaler.jobs.claim_scripts import (
    CLAIM_LUA,
    CREATE_STATE_LUA,
    CREATED_LUA,
    FORGET_QUEUES_LUA,
    GUARD_LUA,
    LIST_CLAIMS_LUA,
    SETTLE_LUA,
    ClaimKeys,
)
from scaler.jobs.keys import (
    ENQUEUED_AT_LUA,
    claim_queues_key,
    claims_key,
    dead_reasons_key,
    job_events_key,
    launches_key,
    wake_channel,
)
from scaler.jobs.outcomes import JOB_END_LUA
from scaler.jobs.runner_claim import RunnerClaim

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from scaler.jobs.leader import Fence

__all__ = [
    "Claim",
    "ClaimStore",
    "RunnerClaim",
    "SettleOutcome",
    "binding_env",
    "claim_queues_key",
    "claims_key",
    "dead_reasons_key",
    "job_events_key",
    "launches_key",
    "machine_name",
    "wake_channel",
]

log = logging.getLogger(__name__)

SettleOutcome = Literal["requeued", "dead_lettered", "gone"]
# The key helpers live in scaler.jobs.keys (the whole contract); claims re-exports its own.


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ClaimStore:
    """Claims on the scaler side (async, fenced); the runner's side is
    :class:`~scaler.jobs.runner_claim.RunnerClaim`.

    Scripts are registered once per store; redis-py loads them with EVALSHA and falls back to a
    load on ``NOSCRIPT``.
    """

    def __init__(
        self, redis: aioredis.Redis, namespace: str = "dramatiq", prefix: str = "fly-scaler"
    ):
        # Imported here so that the in-machine runner never pays for structlog.
        from scaler.jobs.leader import FENCE_LUA

        self._redis = redis
        self.namespace = namespace
        self.prefix = prefix
        def fenced(*body: str) -> Any:
            return redis.register_script(FENCE_LUA + GUARD_LUA + "".join(body))

        self._claim = fenced(ENQUEUED_AT_LUA, JOB_END_LUA, CLAIM_LUA)
        self._settle = fenced(JOB_END_LUA, SETTLE_LUA)
        self._created = fenced(CREATED_LUA)
        self._create_state = fenced(CREATE_STATE_LUA)
        self._forget = redis.register_script(FORGET_QUEUES_LUA)
        self._list = redis.register_script(LIST_CLAIMS_LUA)

    def keys(self, queue: str) -> ClaimKeys:
        """The Redis keys of ``queue`` (dramatiq's and ours)."""
        return ClaimKeys(self.namespace, self.prefix, queue)

    async def _fenced(
        self, script: Any, fence: Fence | None, keys: list[str], args: list[Any]
    ) -> Any:
        """Run a ``FENCE_LUA`` script: the fence goes first in ``keys`` and ``args`` (unfenced:
        the first data key and ``""``)."""
        from scaler.jobs.leader import fence_args, raise_if_fenced

        fkey, fval = fence_args(fence, keys[0])
        try:
            return await script(keys=[fkey, *keys], args=[fval, *args])
        except Exception as exc:
            raise_if_fenced(exc)
            raise

    async def claim(
        self, queue: str, pool: str, n: int, now_ms: int, fence: Fence | None, *,
        app: str = "", create_window_ms: int = 60_000,
    ) -> list[Claim]:
        """Atomically take up to ``n`` ready messages of ``queue`` for ``pool`` (on ``app``).

        Pops from the head (oldest first); ids whose body is gone are dropped; a message already
        past its ``options.max_age`` is dead-lettered (reason ``max_age``), not claimed; each
        claim bumps the launch count of its dramatiq message_id, records its first create as
        pending for ``create_window_ms`` and marks the message ``claimed`` in its record. Raises
        :class:`scaler.jobs.leader.Fenced`.
        """
        if n <= 0:
            return []
        k = self.keys(queue)
        raw = await self._fenced(
            self._claim, fence, k.claim(claim_queues_key(self.prefix)),
            [n, now_ms, pool, queue, app, create_window_ms, k.record_prefix],
        )
        out = []
        for i in range(0, len(raw), 3):
            out.append(Claim.from_record(_text(raw[i]), raw[i + 1], raw[i + 2]))
        return out

    async def list_claims(
        self, queues: Sequence[str], *, with_messages: bool = False
    ) -> dict[str, list[Claim]]:
        """Every claim of ``queues``, with its message body if asked: one read-only script, so a
        claim and its body are read at one instant (a runner's ack removes both together: a
        claim is never listed with its body already gone unless the body really is missing)."""
        if not queues:
            return {}
        keys: list[str] = []
        for q in queues:
            keys += (claims_key(self.prefix, q), self.keys(q).msgs)
        replies = await self._list(keys=keys, args=["1" if with_messages else "0"])
        result: dict[str, list[Claim]] = {}
        for i, q in enumerate(queues):
            flat, bodies = replies[2 * i], replies[2 * i + 1]
            found = [(_text(flat[j]), flat[j + 1], bodies[j // 2] if with_messages else None)
                     for j in range(0, len(flat), 2)]
            found.sort(key=lambda item: item[0])
            claims = []
            for rmid, rec, body in found:
                try:
                    claims.append(Claim.from_record(rmid, rec, body))
                except (ValueError, KeyError, TypeError):
                    log.warning("skipping a malformed claim record %s in queue %s", rmid, q)
            result[q] = claims
        return result

    async def claim_queues(self) -> set[str]:
        """Every queue with claims (the configured ones and any a pool served before)."""
        raw = await self._redis.smembers(claim_queues_key(self.prefix))
        return {_text(q) for q in raw}

    async def forget_queues(self, queues: Sequence[str]) -> None:
        """Drop queues from :meth:`claim_queues` whose claims hash is empty (nothing to settle):
        one script, which checks each hash again, so a claim made meanwhile keeps its queue."""
        if queues:
            await self._forget(
                keys=[claim_queues_key(self.prefix), *(claims_key(self.prefix, q) for q in queues)],
                args=list(queues),
            )

    async def _settle_call(
        self,
        queue: str,
        rmid: str,
        mode: str,
        reason: str,
        fence: Fence | None,
        now_ms: int,
        max_launches: int = 0,
        launch: int | None = None,
    ) -> SettleOutcome:
        k = self.keys(queue)
        outcome = await self._fenced(
            self._settle,
            fence,
            k.settle(),
            [rmid, mode, max_launches, now_ms, reason, "" if launch is None else launch,
             k.record_prefix],
        )
        result: SettleOutcome = _text(outcome)  # type: ignore[assignment]
        if result != "gone":  # the executor logs it for operators, with the message_id
            log.debug("claim %s of queue %s %s: %s", rmid, queue, result, reason)
        return result

    async def give_back(
        self,
        queue: str,
        redis_message_id: str,
        reason: str,
        fence: Fence | None,
        *,
        launch: int | None = None,
    ) -> SettleOutcome:
        """End a claim and put the message back at the head of the ready list (its old place).

        ``launch``: only if the claim is still that launch's. Idempotent: ``"gone"`` when the
        claim no longer exists (or is another launch's) or the body was already acked.
        """
        return await self._settle_call(
            queue, redis_message_id, "give_back", reason, fence, 0, launch=launch
        )

    async def dead_letter(
        self, queue: str, redis_message_id: str, reason: str, fence: Fence | None, now_ms: int,
        *, launch: int | None = None,
    ) -> SettleOutcome:
        """End a claim and move its message to ``{q}.XQ`` as dramatiq's nack does.

        The reason goes to ``{p}:dead-reasons:{q}``. Idempotent.
        """
        return await self._settle_call(
            queue, redis_message_id, "dead_letter", reason, fence, now_ms, launch=launch
        )

    async def requeue_or_dead_letter(
        self,
        queue: str,
        redis_message_id: str,
        reason: str,
        max_launches: int,
        fence: Fence | None,
        now_ms: int,
        *,
        launch: int | None = None,
    ) -> SettleOutcome:
        """The claim's machine is gone without acking: give the job back, or dead-letter it
        with ``"{reason}; gave up after {n} launches"`` once ``n >= max_launches``."""
        if max_launches < 1:
            raise ValueError(f"max_launches: must be >= 1, got {max_launches}")
        return await self._settle_call(
            queue, redis_message_id, "auto", reason, fence, now_ms, max_launches, launch=launch
        )

    async def record_machine(
        self, queue: str, redis_message_id: str, launch: int, machine_id: str, now_ms: int,
        fence: Fence | None,
    ) -> bool:
        """The create of this claim's machine returned ``machine_id``: bind the claim to it, so
        that only that machine's runner may take the job. False if the claim is gone (the job
        already finished), is another launch's, or is bound to another machine."""
        k = self.keys(queue)
        return bool(
            await self._fenced(
                self._created, fence, [k.claims], [redis_message_id, launch, machine_id, now_ms]
            )
        )

    async def begin_create(
        self, queue: str, redis_message_id: str, launch: int, now_ms: int, window_ms: int,
        fence: Fence | None,
    ) -> bool:
        """A relaunch is about to send its create: record it as pending for ``window_ms`` (no
        replica relaunches the claim meanwhile) and count the attempt. False if the claim is gone,
        another launch's, or already bound to a machine (nothing to create)."""
        k = self.keys(queue)
        return bool(
            await self._fenced(
                self._create_state, fence, [k.claims],
                [redis_message_id, launch, now_ms, "begin", window_ms],
            )
        )

    async def create_failed(
        self, queue: str, redis_message_id: str, launch: int, now_ms: int, error: str,
        fence: Fence | None, *, refused: bool = False,
    ) -> bool:
        """The claim's create made no machine: the planner backs off from ``now_ms``.
        ``refused``: Fly refused the request for good; ``error`` is kept as its reason for the
        planner to judge (it dead-letters a job whose own options shaped the machine)."""
        k = self.keys(queue)
        mode = "refused" if refused else "failed"
        return bool(
            await self._fenced(
                self._create_state, fence, [k.claims],
                [redis_message_id, launch, now_ms, mode, error[:500]],
            )
        )
