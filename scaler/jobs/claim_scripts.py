"""The claim Lua scripts, and the in-machine runner's synchronous handle on the two it calls.

The record they read and write is documented in :mod:`scaler.jobs.claims`, whose
:class:`~scaler.jobs.claims.ClaimStore` calls the others on the scaler side (fenced). Imported by
the in-machine runner, so it stays light: only the key helpers and, for type checking, redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from scaler.jobs.keys import QueueKeys, job_events_key, wake_channel

if TYPE_CHECKING:
    import redis

__all__ = [
    "CLAIM_LUA",
    "CREATED_LUA",
    "CREATE_STATE_LUA",
    "FINISH_LUA",
    "FORGET_QUEUES_LUA",
    "GUARD_LUA",
    "MARK_LUA",
    "SETTLE_LUA",
    "ClaimKeys",
    "FinishOutcome",
    "RunnerClaim",
]

# --- Lua -------------------------------------------------------------------------------------
# Message bodies are only ever cjson.decode'd (read); they are never re-encoded, because cjson
# loses precision on big numbers. Our own claim records are small and safe to re-encode.

GUARD_LUA = """
local function claim_of(claims, id, launch)
  local rec = redis.call('HGET', claims, id)
  if not rec then return nil, false end
  local c = cjson.decode(rec)
  return c, launch == nil or launch == '' or tonumber(c['launch']) == tonumber(launch)
end
"""
"""The prologue every claim script starts with (after the fence check, on the scaler side):
``claim_of(claims key, id, launch)`` is the decoded claim (``nil`` when there is none) and whether
it is that launch's (``''``: any launch's). Only the claim of the caller's own launch is changed:
a settlement planned for one launch, or the runner of an older launch, never ends a newer one."""

# KEYS: fence, ready, msgs, claims, launches, claim queues.
# ARGV: fence value, n, now_ms, pool, queue, app, create window ms.
# A claim is made just before its machine's create is sent: it records that create as pending
# until now + window (no replica relaunches it meanwhile) and counts it as attempt 1.
CLAIM_LUA = """
local n = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local out = {}
local got = 0
while got < n do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  local body = redis.call('HGET', KEYS[3], id)
  if body and redis.call('HEXISTS', KEYS[4], id) == 0 then
    local ok, msg = pcall(cjson.decode, body)
    local mid = id
    local enq = now
    if ok and type(msg) == 'table' then
      if type(msg['message_id']) == 'string' then mid = msg['message_id'] end
      enq = enqueued_at(msg) or now
    end
    local launch = redis.call('HINCRBY', KEYS[5], mid, 1)
    local bare = (string.gsub(id, '%-', ''))
    local rec = cjson.encode({pool = ARGV[4], queue = ARGV[5], app = ARGV[6], message_id = mid,
      launch = launch, claimed_at = now, enqueued_at = enq,
      machine_name = ARGV[4] .. '-' .. bare .. '-' .. launch, state = 'claimed',
      create_until = now + tonumber(ARGV[7]), attempts = 1})
    redis.call('HSET', KEYS[4], id, rec)
    out[#out + 1] = id
    out[#out + 1] = rec
    out[#out + 1] = body
    got = got + 1
  end
end
if got > 0 then redis.call('SADD', KEYS[6], ARGV[5]) end
return out
"""

# KEYS: fence, ready, msgs, claims, launches, xq, xq msgs, dead reasons.
# ARGV: fence value, rmid, mode (give_back|dead_letter|auto), max_launches, now_ms, reason,
# launch ('' = any).
SETTLE_LUA = """
local claim, mine = claim_of(KEYS[4], ARGV[2], ARGV[7])
if not mine then return 'gone' end
local mid = claim['message_id']
local mode = ARGV[3]
local reason = ARGV[6]
local launches = tonumber(redis.call('HGET', KEYS[5], mid) or '0')
if mode == 'auto' then
  if launches < tonumber(ARGV[4]) then
    mode = 'give_back'
  else
    mode = 'dead_letter'
    reason = reason .. '; gave up after ' .. launches .. ' launches'
  end
end
redis.call('HDEL', KEYS[4], ARGV[2])
local body = redis.call('HGET', KEYS[3], ARGV[2])
if mode == 'give_back' then
  if body then
    redis.call('LPUSH', KEYS[2], ARGV[2])
    return 'requeued'
  end
  return 'gone'
end
redis.call('HDEL', KEYS[5], mid)
if not body then return 'gone' end
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])
redis.call('HSET', KEYS[7], ARGV[2], body)
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[8], ARGV[2], cjson.encode({reason = reason, at = tonumber(ARGV[5]),
  message_id = mid, launches = launches}))
return 'dead_lettered'
"""

# KEYS: claims. ARGV: rmid, machine_id, now_ms, launch ('' = any). Both the runner's start and
# its heartbeats: binds an unbound claim of the runner's own launch to the machine, keeps the first
# started_at, refreshes heartbeat_at. A machine of an older launch (its claim was given back and
# claimed again) never takes the newer launch's claim.
MARK_LUA = """
local c, mine = claim_of(KEYS[1], ARGV[1], ARGV[4])
if not mine then return 0 end
local owner = c['machine_id']
if owner and owner ~= ARGV[2] then return 0 end
local now = tonumber(ARGV[3])
c['state'] = 'running'
c['machine_id'] = ARGV[2]
c['create_until'] = nil
if not c['started_at'] then c['started_at'] = now end
c['heartbeat_at'] = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
return 1
"""

# KEYS: fence, claims. ARGV: fence value, rmid, launch, machine_id, now_ms.
# The create of this claim's machine returned: only that machine may run the job from now on.
CREATED_LUA = """
local c, mine = claim_of(KEYS[2], ARGV[2], ARGV[3])
if not mine then return 0 end
if c['machine_id'] and c['machine_id'] ~= ARGV[4] then return 0 end
c['machine_id'] = ARGV[4]
c['updated_at'] = tonumber(ARGV[5])
c['create_until'] = nil
c['failed_at'] = nil
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
return 1
"""

# KEYS: fence, claims. ARGV: fence value, rmid, launch, now_ms, mode, window ms | error.
# mode 'begin': a relaunch is about to send its create: pending until now + window, one more
# attempt. mode 'failed': the create certainly made no machine (abandoned and then not found, out
# of capacity...): the planner backs off from failed_at before the next attempt. mode 'refused':
# the same, and Fly refused the request for good: its reason is kept in 'refused' for the planner
# to judge. None touches a claim of another launch or one already bound to a machine.
CREATE_STATE_LUA = """
local c, mine = claim_of(KEYS[2], ARGV[2], ARGV[3])
if not mine or c['machine_id'] then return 0 end
if ARGV[5] == 'begin' then
  c['create_until'] = tonumber(ARGV[4]) + tonumber(ARGV[6])
  c['attempts'] = (tonumber(c['attempts']) or 1) + 1
  c['failed_at'] = nil
  c['refused'] = nil
else
  c['create_until'] = nil
  c['failed_at'] = tonumber(ARGV[4])
  c['last_error'] = ARGV[6]
  if ARGV[5] == 'refused' then c['refused'] = ARGV[6] else c['refused'] = nil end
end
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
return 1
"""

# KEYS: claims, launches, msgs, xq, xq msgs, job events. ARGV: rmid, outcome (none|ack|nack),
# now_ms, wake channel, launch ('' = any). An ack or nack also appends a job event (timings for the
# scaler's metrics) and wakes the scaler: the job's machine is about to go, and its cap slot with
# it. Ack/nack on the message and the end of the claim happen together: a crash between the two
# would otherwise strand a body with no claim and no place in the ready list.
# A runner of an older launch that finishes while a newer launch holds the claim (the job was given
# back while it ran) still acks or nacks: the job did run. It ends the newer claim only when that
# claim's machine has not started the job, so the job does not run a second time.
FINISH_LUA = """
local c, mine = claim_of(KEYS[1], ARGV[1], ARGV[5])
if c and not mine and c['state'] == 'running' and ARGV[2] == 'none' then return 0 end
if ARGV[2] == 'ack' then
  redis.call('HDEL', KEYS[3], ARGV[1])
elseif ARGV[2] == 'nack' then
  local body = redis.call('HGET', KEYS[3], ARGV[1])
  if body then
    redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
    redis.call('HSET', KEYS[5], ARGV[1], body)
    redis.call('HDEL', KEYS[3], ARGV[1])
  end
end
if not c then return 0 end
if not mine and c['state'] == 'running' then return 0 end
redis.call('HDEL', KEYS[2], c['message_id'])
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] ~= 'none' then
  redis.call('RPUSH', KEYS[6], cjson.encode({pool = c['pool'], queue = c['queue'],
    outcome = ARGV[2], enqueued_at = c['enqueued_at'], started_at = c['started_at'],
    finished_at = tonumber(ARGV[3])}))
  redis.call('LTRIM', KEYS[6], -10000, -1)
  if ARGV[4] then redis.call('PUBLISH', ARGV[4], c['queue']) end
end
if not mine then return 0 end
return 1
"""

# KEYS: claim queues, then each queue's claims hash. ARGV: the queues, in the same order.
FORGET_QUEUES_LUA = """
for i, q in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then redis.call('SREM', KEYS[1], q) end
end
return 1
"""

FinishOutcome = Literal["none", "ack", "nack"]


class ClaimKeys(QueueKeys):
    """A queue's keys plus what the claim scripts also touch."""

    @property
    def events(self) -> str:
        return job_events_key(self.prefix)

    @property
    def wake(self) -> str:
        return wake_channel(self.prefix)

    def finish(self) -> list[str]:
        return [self.claims, self.launches, self.msgs, self.dead, self.dead_msgs, self.events]


class RunnerClaim:
    """The runner's synchronous handle on its one bound claim (no fencing: it owns the claim)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str,
        prefix: str,
        queue: str,
        redis_message_id: str,
        launch: int | None = None,
    ) -> None:
        self._keys = ClaimKeys(namespace, prefix, queue)
        self.queue = queue
        self.redis_message_id = redis_message_id
        self.launch = launch
        self._launch_arg = "" if launch is None else str(launch)
        self._mark = client.register_script(GUARD_LUA + MARK_LUA)
        self._finish = client.register_script(GUARD_LUA + FINISH_LUA)

    def mark_running(self, machine_id: str, now_ms: int) -> bool:
        """Record that this machine runs the job; False if the claim is gone, another launch's,
        or bound to another machine."""
        args: list[str | int] = [self.redis_message_id, machine_id, now_ms, self._launch_arg]
        return bool(self._mark(keys=[self._keys.claims], args=args))

    def heartbeat(self, machine_id: str, now_ms: int) -> bool:
        """Refresh ``heartbeat_at`` (the same write as :meth:`mark_running`); False if the claim
        is gone or not ours."""
        return self.mark_running(machine_id, now_ms)

    def finish(self, outcome: FinishOutcome, now_ms: int) -> bool:
        """Atomically ack (``"ack"``: drop the body) or nack (``"nack"``: move it to ``{q}.XQ``)
        the message and end the claim. False if there was no claim any more."""
        return bool(
            self._finish(
                keys=self._keys.finish(),
                args=[self.redis_message_id, outcome, now_ms, self._keys.wake, self._launch_arg],
            )
        )
