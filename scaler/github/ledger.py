"""What the scaler knows of GitHub's jobs and of its own runners, in Redis, and how a job's
events change the pool's queue.

GitHub gives a queued job to *any* idle runner whose labels match, not to the runner launched for
it. So a job is not bound to a runner: each queued job is one message (one unit of demand) in its
pool's queue, with ``message_id`` ``github-job-{job_id}`` (an enqueue of the same job twice, from
a redelivery or a resync, writes nothing), and each claim of that queue is one runner machine. A
runner that finishes *any* job ends the claim it was launched under, whichever job that claim's
message named: the count of demand and of runners stays right even though names cross.

Keys (under the scaler's prefix, each expiring after :data:`TTL_S`):

- ``{p}:github:job:{job_id}``: HASH ``pool, queue, repository, message_id, queued_at, state``
  (``queued``, ``in_progress``, ``completed``), ``runner``, ``started_at``.
- ``{p}:github:queued:{pool}``: ZSET of job id -> queued-at (ms): the pool's jobs queued on GitHub
  and not yet started by any runner (the planner weighs runners against it).
- ``{p}:github:runner:{machine_name}``: HASH ``pool, runner_id, scope, registered_at`` (ms), and
  once a job starts on it ``job_id, started_at``; ``completed_at`` when the job ends.

Events:

- ``queued``: :meth:`Ledger.queue` enqueues the message and records the job.
- ``in_progress``: :meth:`Ledger.started` records the runner and removes the job from the queued
  set.
- ``completed``: :meth:`Ledger.completed`. If a runner of ours ran it, that runner's claim ends
  as a finished job (its machine is exiting; one still there after ``orphan_grace`` is destroyed).
  Otherwise (cancelled before any runner took it, or run by a runner not ours) one unit of demand
  is withdrawn: the job's message if it still waits in the queue, else the newest waiting message
  of the pool (the job's own was claimed: its runner serves the job that message stood for). With
  none waiting, a runner is surplus, and the planner withdraws an idle one
  (:mod:`scaler.policy.runners`).

Deliveries are not ordered: a ``queued`` arriving after its job's ``in_progress`` or
``completed`` writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from scaler.jobs.claim_scripts import GUARD_LUA, ClaimKeys
from scaler.jobs.claims import ClaimStore
from scaler.jobs.keys import message_record_key
from scaler.jobs.leader import FENCE_LUA, Fence, fence_args, raise_if_fenced
from scaler.jobs.messages import MessageStore, build_message
from scaler.jobs.outcomes import JOB_END_LUA
from scaler.jobs.runner_claim import FINISH_LUA

__all__ = ["ACTOR", "TTL_S", "JobRef", "Ledger", "RunnerInfo", "job_message_id"]

TTL_S = 3 * 24 * 3600
"""How long a job's or a runner's record is kept: GitHub cancels a job queued for 24 hours, and
a job runs for at most 35 days on self-hosted runners, but a runner of ours for ``max_runtime``."""
ACTOR = "github_workflow_job"
"""The actor name of a runner job's message (no dramatiq worker runs it: a runner machine does)."""

# KEYS: message record, ready list, msgs hash. ARGV: now_ms, message record prefix.
# One unit of demand leaves the queue: the job's own message if it still waits, else the newest
# waiting message of the pool (the job's own was claimed: its runner will serve the job that
# message stood for). Its record says it was withdrawn. Returns 1 when a message was withdrawn.
_WITHDRAW_LUA = """
local rmid = redis.call('HGET', KEYS[1], 'redis_message_id')
local rec = KEYS[1]
if not rmid or redis.call('LREM', KEYS[2], 1, rmid) == 0 then
  rmid = redis.call('LINDEX', KEYS[2], -1)
  if not rmid then return 0 end
  local body = redis.call('HGET', KEYS[3], rmid)
  redis.call('LREM', KEYS[2], 1, rmid)
  rec = nil
  if body then
    local ok, msg = pcall(cjson.decode, body)
    if ok and type(msg) == 'table' and type(msg['message_id']) == 'string' then
      rec = ARGV[2] .. msg['message_id']
    end
  end
end
redis.call('HDEL', KEYS[3], rmid)
if rec and redis.call('EXISTS', rec) == 1 then
  redis.call('HSET', rec, 'state', 'done', 'reason', 'withdrawn', 'finished_at', ARGV[1])
end
return 1
"""


# KEYS: fence, claims, launches, msgs. ARGV: fence value, rmid, launch, now_ms, record prefix.
# A surplus runner's claim ends and its message is dropped: the demand it stood for is gone.
_WITHDRAW_CLAIM_LUA = FENCE_LUA + GUARD_LUA + """
local c, mine = claim_of(KEYS[2], ARGV[2], ARGV[3])
if not mine then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], c['message_id'])
redis.call('HDEL', KEYS[4], ARGV[2])
local rec = ARGV[5] .. c['message_id']
if redis.call('EXISTS', rec) == 1 then
  redis.call('HSET', rec, 'state', 'done', 'reason', 'withdrawn', 'finished_at', ARGV[4])
end
return 1
"""


def job_message_id(job_id: int) -> str:
    """The message id of a GitHub job: its idempotency key in the pool's queue."""
    return f"github-job-{job_id}"


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job as the webhook or the resync knows it."""

    job_id: int
    run_id: int
    repository: str
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunnerInfo:
    """A runner machine of ours, as recorded at launch and by the job events."""

    machine_name: str
    pool: str
    runner_id: int | None
    scope: str
    registered_at: int | None
    job_id: int | None
    started_at: int | None
    completed_at: int | None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _int(v: Any) -> int | None:
    try:
        return int(_text(v)) if v not in (None, b"", "") else None
    except ValueError:
        return None


class Ledger:
    """The GitHub job and runner records of one scaler (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        namespace: str,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._prefix = prefix
        self._clock = clock
        self.redis, self.namespace, self.prefix = redis, namespace, prefix
        self._messages = MessageStore(redis, namespace=namespace, prefix=prefix)
        self._claims = ClaimStore(redis, namespace, prefix)
        self._withdraw = redis.register_script(_WITHDRAW_LUA)
        self._finish = redis.register_script(GUARD_LUA + JOB_END_LUA + FINISH_LUA)
        self._withdraw_claim = redis.register_script(_WITHDRAW_CLAIM_LUA)

    def _key(self, *parts: object) -> str:
        return ":".join((self._prefix, "github", *(str(p) for p in parts)))

    def queued_key(self, pool: str) -> str:
        """The ZSET of the pool's jobs queued on GitHub and not started."""
        return self._key("queued", pool)

    def now_ms(self) -> int:
        """The ledger's clock, in ms."""
        return int(self._clock() * 1000)

    async def queue(self, pool: str, queue: str, job: JobRef) -> bool:
        """Enqueue ``job`` as a message of ``queue`` and record it; ``False`` when it was
        enqueued before (a redelivery, a resync of a known job): nothing is written then."""
        now = self.now_ms()
        state = await self._redis.hget(self._key("job", job.job_id), "state")
        if state is not None and _text(state) != "queued":
            return False  # its in_progress or completed came first (deliveries are unordered)
        message = build_message(
            queue=queue, actor=ACTOR, args=[],
            kwargs={"job_id": job.job_id, "run_id": job.run_id, "repository": job.repository,
                    "labels": list(job.labels)},
            options={}, message_id=job_message_id(job.job_id), now_ms=now,
        )
        # The job is counted as queued before its message exists, so that no plan sees the
        # message without the job (and holds its launch back as surplus).
        key = self._key("job", job.job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "state", "queued")
            pipe.hsetnx(key, "queued_at", now)
            pipe.hset(key, mapping={"pool": pool, "queue": queue,
                                    "message_id": job_message_id(job.job_id),
                                    "repository": job.repository})
            pipe.expire(key, TTL_S)
            pipe.zadd(self.queued_key(pool), {str(job.job_id): now}, nx=True)
            pipe.expire(self.queued_key(pool), TTL_S)
            await pipe.execute()
        done = await self._messages.enqueue(message, digest=f"github:{job.job_id}")
        return done.created

    async def job(self, job_id: int) -> dict[str, str]:
        """The record of a job (empty when unknown)."""
        raw = await self._redis.hgetall(self._key("job", job_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def record_runner(self, machine_name: str, pool: str, runner_id: int,
                            scope: str) -> None:
        """A runner registered for ``machine_name`` (at launch, before its machine exists)."""
        key = self._key("runner", machine_name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"pool": pool, "runner_id": runner_id, "scope": scope,
                                    "registered_at": self.now_ms()})
            pipe.expire(key, TTL_S)
            await pipe.execute()

    async def runners(self, names: Sequence[str]) -> dict[str, RunnerInfo]:
        """The records of the given machines that are runners of ours."""
        if not names:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hgetall(self._key("runner", n))
            replies = await pipe.execute()
        out = {}
        for name, raw in zip(names, replies, strict=True):
            if raw:
                out[name] = _runner(name, {_text(k): v for k, v in raw.items()})
        return out

    async def forget_runner(self, machine_name: str) -> None:
        """Drop a runner's record (its machine is gone and its registration removed)."""
        await self._redis.delete(self._key("runner", machine_name))

    async def queued_counts(self, pools: Sequence[str]) -> dict[str, int]:
        """Per pool, its jobs queued on GitHub and not yet started."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in pools:
                pipe.zcard(self.queued_key(p))
            replies = await pipe.execute()
        return {p: int(n) for p, n in zip(pools, replies, strict=True)}

    async def started(
        self, job_id: int, runner_name: str | None, *, routable: bool = True
    ) -> tuple[str | None, float | None]:
        """A runner started ``job_id``: record it (a job no pool would take is not recorded:
        ``routable``). Returns the runner's pool when the runner is ours (else ``None``) and the
        seconds since the job was queued, if known."""
        now = self.now_ms()
        job = await self.job(job_id)
        pool = job.get("pool")
        if pool:
            await self._redis.zrem(self.queued_key(pool), str(job_id))
        if pool or routable:
            await self._redis.hset(self._key("job", job_id),
                                   mapping={"state": "in_progress", "runner": runner_name or "",
                                            "started_at": now})
            await self._redis.expire(self._key("job", job_id), TTL_S)
        ours = await self.runners([runner_name]) if runner_name else {}
        if not ours:
            return None, None
        assert runner_name is not None
        await self._redis.hset(self._key("runner", runner_name),
                               mapping={"job_id": job_id, "started_at": now})
        queued_at = _int(job.get("queued_at"))
        waited = (now - queued_at) / 1000 if queued_at is not None else None
        return ours[runner_name].pool, waited

    async def completed(
        self, job_id: int, runner_name: str | None, queues: Mapping[str, str], *,
        routable: bool = True,
    ) -> tuple[str | None, str]:
        """``job_id`` completed (or was cancelled). ``queues`` maps each github pool to its
        queue. Returns the pool (``None`` when the job is not one of ours) and the outcome:
        ``ran`` (a runner of ours ran it: that runner's claim ended) or ``withdrawn``."""
        now = self.now_ms()
        job = await self.job(job_id)
        pool = job.get("pool")
        if pool:
            await self._redis.zrem(self.queued_key(pool), str(job_id))
        if pool or routable:  # recorded, so that a late ``queued`` of it writes nothing
            await self._redis.hset(self._key("job", job_id), "state", "completed")
            await self._redis.expire(self._key("job", job_id), TTL_S)
        runner = (await self.runners([runner_name])).get(runner_name) if runner_name else None
        if runner is not None and runner.pool in queues:
            assert runner_name is not None
            await self._redis.hset(self._key("runner", runner_name), "completed_at", now)
            await self._end_claim_of(queues[runner.pool], runner_name, now)
            return runner.pool, "ran"
        queue = job.get("queue")
        if pool and queue:
            keys = ClaimKeys(self._ns, self._prefix, queue)
            await self._withdraw(
                keys=[message_record_key(self._prefix, job_message_id(job_id)), keys.ready,
                      keys.msgs],
                args=[now, keys.record_prefix],
            )
            return pool, "withdrawn"
        return None, "withdrawn"

    async def withdraw_waiting(self, queue: str, n: int) -> int:
        """Withdraw up to ``n`` of the newest messages waiting in ``queue`` (demand that is gone);
        returns how many were."""
        keys = ClaimKeys(self._ns, self._prefix, queue)
        done = 0
        for _ in range(n):
            if not await self._withdraw(
                keys=[message_record_key(self._prefix, ""), keys.ready, keys.msgs],
                args=[self.now_ms(), keys.record_prefix],
            ):
                break
            done += 1
        return done

    async def withdraw_claim(
        self, queue: str, rmid: str, launch: int, fence: Fence | None, now_ms: int
    ) -> bool:
        """End the claim ``rmid`` of ``launch`` and drop its message (fenced); ``False`` when
        that claim is gone (its runner finished meanwhile)."""
        keys = ClaimKeys(self._ns, self._prefix, queue)
        fkey, fval = fence_args(fence, keys.claims)
        try:
            return bool(await self._withdraw_claim(
                keys=[fkey, keys.claims, keys.launches, keys.msgs],
                args=[fval, rmid, launch, now_ms, keys.record_prefix],
            ))
        except Exception as exc:
            raise_if_fenced(exc)
            raise

    async def _end_claim_of(self, queue: str, machine_name: str, now: int) -> bool:
        """End the claim whose machine is ``machine_name`` as a finished job (acked)."""
        claims = (await self._claims.list_claims([queue]))[queue]
        for c in claims:
            if c.machine_name == machine_name:
                keys = ClaimKeys(self._ns, self._prefix, queue)
                return bool(await self._finish(
                    keys=keys.finish(),
                    args=[c.redis_message_id, "ack", now, keys.wake, str(c.launch),
                          c.machine_id or "", "", keys.record_prefix, c.message_id, ACTOR],
                ))
        return False


def _runner(name: str, raw: Mapping[str, Any]) -> RunnerInfo:
    return RunnerInfo(
        machine_name=name,
        pool=_text(raw.get("pool", "")),
        runner_id=_int(raw.get("runner_id")),
        scope=_text(raw.get("scope", "")),
        registered_at=_int(raw.get("registered_at")),
        job_id=_int(raw.get("job_id")),
        started_at=_int(raw.get("started_at")),
        completed_at=_int(raw.get("completed_at")),
    )

