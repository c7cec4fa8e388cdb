"""Warm per-job slots in Redis: which claim a slot machine runs next.

A slot is a stopped machine of a per-job pool, created ahead with the pool's template (no job in
its env). To run a job on it the scaler claims the message as for any per-job launch
(:mod:`scaler.jobs.claim_scripts`), then binds the claim to the slot with :data:`BIND_LUA` (fenced)
and starts the machine. The runner inside finds its job by ``FLY_MACHINE_ID``
(:func:`read_binding`), takes the claim (only the machine the claim names may) and ends it as
any bound runner does; the machine exits and stops, and the slot is free again.

Key (prefix ``p``): ``{p}:slots`` HASH machine id -> JSON ``{"pool", "queue", "job" (the
redis_message_id), "launch", "jobs" (jobs bound to this slot so far), "bound_at" (ms)}``: the
slot's last binding. It stays after the job ends: a binding is *live* while the claim it names
still exists, is that launch's and names this machine; otherwise the slot is free. So a slot is
freed by the runner ending the claim, or by the scaler settling it (a slot that died mid-job),
with no second write to forget. The entry is removed when the slot is destroyed
(:meth:`SlotStore.forget`).

Light to import (the runner reads bindings): json and the key helpers only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from scaler.jobs.claim_scripts import GUARD_LUA
from scaler.jobs.keys import claims_key, finished_machines_key, orphans_key, slots_key

if TYPE_CHECKING:
    import redis as syncredis
    import redis.asyncio as aioredis

    from scaler.jobs.leader import Fence

__all__ = ["BIND_LUA", "BindOutcome", "SlotBinding", "SlotStore", "read_binding", "slots_key"]

BindOutcome = Literal["bound", "busy", "gone", "elsewhere"]


# KEYS: fence, slots, claims of the job's queue, finished machines, orphan marks.
# ARGV: fence value, machine id, queue, rmid, launch, now_ms, prefix, pool.
# 'gone': the claim is not there (or is another launch's); 'elsewhere': it is bound to another
# machine; 'busy': the slot's previous binding is still live (its claim names this machine), so
# a slot never runs two jobs at once; 'bound': done (also when this very binding was made before).
BIND_LUA = """
local claim, mine = claim_of(KEYS[3], ARGV[4], ARGV[5])
if not claim or not mine then return 'gone' end
if claim['machine_id'] and claim['machine_id'] ~= ARGV[2] then return 'elsewhere' end
local jobs = 0
local prev = redis.call('HGET', KEYS[2], ARGV[2])
if prev then
  local p = cjson.decode(prev)
  jobs = tonumber(p['jobs'] or 0)
  if p['job'] == ARGV[4] and p['queue'] == ARGV[3]
      and tonumber(p['launch']) == tonumber(ARGV[5]) then
    return 'bound'
  end
  local raw = redis.call('HGET', ARGV[7] .. ':claims:' .. p['queue'], p['job'])
  if raw then
    local c = cjson.decode(raw)
    if c['machine_id'] == ARGV[2] and tonumber(c['launch']) == tonumber(p['launch']) then
      return 'busy'
    end
  end
end
local now = tonumber(ARGV[6])
claim['machine_id'] = ARGV[2]
claim['updated_at'] = now
claim['create_until'] = nil
claim['slot'] = 1
redis.call('HSET', KEYS[3], ARGV[4], cjson.encode(claim))
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode({pool = ARGV[8], queue = ARGV[3], job = ARGV[4],
  launch = tonumber(ARGV[5]), jobs = jobs + 1, bound_at = now}))
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
return 'bound'
"""


@dataclass(frozen=True, slots=True)
class SlotBinding:
    """A slot's last binding, as stored in ``{p}:slots``."""

    machine_id: str
    pool: str
    queue: str
    job: str
    launch: int
    jobs: int
    bound_at: int

    @classmethod
    def decode(cls, machine_id: str, raw: str | bytes) -> SlotBinding:
        """Parse one stored binding (raise ``ValueError``/``KeyError`` if malformed)."""
        d = json.loads(raw)
        return cls(machine_id, str(d.get("pool", "")), str(d["queue"]), str(d["job"]),
                   int(d["launch"]), int(d.get("jobs") or 0), int(d.get("bound_at") or 0))


def read_binding(client: syncredis.Redis, prefix: str, machine_id: str) -> SlotBinding | None:
    """The runner's side: the binding of this slot machine, if any (synchronous client)."""
    raw = client.hget(slots_key(prefix), machine_id)
    return None if raw is None else SlotBinding.decode(machine_id, raw)


class SlotStore:
    """Slot bindings on the scaler side (async; binding is fenced)."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "fly-scaler") -> None:
        from scaler.jobs.leader import FENCE_LUA

        self._redis = redis
        self.prefix = prefix
        self._bind = redis.register_script(FENCE_LUA + GUARD_LUA + BIND_LUA)

    async def bind(
        self, pool: str, queue: str, redis_message_id: str, launch: int, machine_id: str,
        now_ms: int, fence: Fence | None,
    ) -> BindOutcome:
        """Bind the claim of ``(queue, redis_message_id, launch)`` to the slot ``machine_id``.

        Raises :class:`scaler.jobs.leader.Fenced` when a newer leader exists."""
        from scaler.jobs.leader import fence_args, raise_if_fenced

        keys = [slots_key(self.prefix), claims_key(self.prefix, queue),
                finished_machines_key(self.prefix), orphans_key(self.prefix)]
        fkey, fval = fence_args(fence, keys[0])
        try:
            out: Any = await self._bind(
                keys=[fkey, *keys],
                args=[fval, machine_id, queue, redis_message_id, launch, now_ms, self.prefix,
                      pool],
            )
        except Exception as exc:
            raise_if_fenced(exc)
            raise
        text = out.decode() if isinstance(out, bytes) else str(out)
        return text  # type: ignore[return-value]

    async def bindings(self) -> dict[str, SlotBinding]:
        """Every slot's last binding, by machine id (malformed entries are skipped)."""
        raw = await self._redis.hgetall(slots_key(self.prefix))
        out: dict[str, SlotBinding] = {}
        for k, v in raw.items():
            mid = k.decode() if isinstance(k, bytes) else str(k)
            try:
                out[mid] = SlotBinding.decode(mid, v)
            except (ValueError, KeyError, TypeError):
                continue
        return out

    async def forget(self, *machine_ids: str) -> None:
        """Drop the entries of destroyed slots."""
        if machine_ids:
            await self._redis.hdel(slots_key(self.prefix), *machine_ids)
