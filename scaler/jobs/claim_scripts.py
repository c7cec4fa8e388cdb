"""The claim Lua scripts and their keys.

The record they read and write is documented in :mod:`scaler.jobs.claims`, whose
:class:`~scaler.jobs.claims.ClaimStore` calls them on the scaler side (fenced); the in-machine
runner's scripts (mark, finish, abort) are called through
:class:`~scaler.jobs.runner_claim.RunnerClaim`. The scripts that end a job record how it ended with
the helpers of :mod:`scaler.jobs.outcomes`. Imported by the runner, so it stays light: only the key
helpers and the outcome helpers.
"""

from __future__ import annotations

from scaler.jobs.keys import (
    QueueKeys,
    finished_machines_key,
    job_events_key,
    message_record_prefix,
    wake_channel,
)

__all__ = [
    "CLAIM_LUA",
    "CREATED_LUA",
    "CREATE_STATE_LUA",
    "FORGET_QUEUES_LUA",
    "GUARD_LUA",
    "LIST_CLAIMS_LUA",
    "MARK_LUA",
    "MAX_AGE_SKIPS",
    "SETTLE_LUA",
    "ClaimKeys",
]

MAX_AGE_SKIPS = 1000
"""Messages past their ``max_age`` one claim call dead-letters at most (the rest wait a call)."""


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

# KEYS: fence, ready, msgs, claims, launches, claim queues, xq, xq msgs, dead reasons, job
# events, recent jobs.
# ARGV: fence value, n, now_ms, pool, queue, app, create window ms, message record prefix.
# A claim is made just before its machine's create is sent: it records that create as pending
# until now + window (no replica relaunches it meanwhile) and counts it as attempt 1. A message
# already past its options.max_age is dead-lettered instead, as dramatiq's AgeLimit would skip it
# in the machine: no claim, no launch, no machine (at most MAX_AGE_SKIPS of them per call).
CLAIM_LUA = """
local n = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local out = {}
local got = 0
local skipped = 0
local function too_old(msg)
  local opts = msg['options']
  if type(opts) ~= 'table' or type(msg['message_timestamp']) ~= 'number' then return nil end
  local max_age = opts['max_age']
  if type(max_age) ~= 'number' or max_age <= 0 then return nil end
  local age = now - msg['message_timestamp']
  if age < max_age then return nil end
  return 'max_age: ' .. string.format('%d', age) .. ' ms old at claim, past its max_age of '
    .. string.format('%d', max_age) .. ' ms (dramatiq AgeLimit)'
end
while got < n and skipped < """ + str(MAX_AGE_SKIPS) + """ do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  local body = redis.call('HGET', KEYS[3], id)
  if body and redis.call('HEXISTS', KEYS[4], id) == 0 then
    local ok, msg = pcall(cjson.decode, body)
    local mid = id
    local enq = now
    local expired = nil
    if ok and type(msg) == 'table' then
      if type(msg['message_id']) == 'string' then mid = msg['message_id'] end
      enq = enqueued_at(msg) or now
      expired = too_old(msg)
    end
    if expired then
      local launches = tonumber(redis.call('HGET', KEYS[5], mid) or '0')
      redis.call('HDEL', KEYS[5], mid)
      dead_letter_body(KEYS[3], KEYS[7], KEYS[8], KEYS[9], id, now, {reason = expired, at = now,
        message_id = mid, launches = launches, cause = 'max_age'})
      message_record(ARGV[8], mid, {'queue', ARGV[5], 'redis_message_id', id,
        'state', 'dead_lettered', 'reason', expired, 'finished_at', now}, {'machine_id'})
      job_ended(KEYS[10], KEYS[11], {pool = ARGV[4], queue = ARGV[5], outcome = 'dead_lettered',
        cause = 'max_age', reason = expired, message_id = mid, redis_message_id = id,
        actor = msg['actor_name'], enqueued_at = enq, finished_at = now})
      skipped = skipped + 1
    else
      local launch = redis.call('HINCRBY', KEYS[5], mid, 1)
      local bare = (string.gsub(id, '%-', ''))
      local name = ARGV[4] .. '-' .. bare .. '-' .. launch
      local rec = cjson.encode({pool = ARGV[4], queue = ARGV[5], app = ARGV[6], message_id = mid,
        launch = launch, claimed_at = now, enqueued_at = enq, machine_name = name,
        state = 'claimed', create_until = now + tonumber(ARGV[7]), attempts = 1})
      redis.call('HSET', KEYS[4], id, rec)
      message_record(ARGV[8], mid, {'queue', ARGV[5], 'redis_message_id', id, 'state', 'claimed',
        'launch', launch}, {'reason', 'machine_id', 'finished_at'})
      out[#out + 1] = id
      out[#out + 1] = rec
      out[#out + 1] = body
      got = got + 1
    end
  end
end
if got > 0 then redis.call('SADD', KEYS[6], ARGV[5]) end
return out
"""

# KEYS: fence, ready, msgs, claims, launches, xq, xq msgs, dead reasons, recent jobs.
# ARGV: fence value, rmid, mode (give_back|dead_letter|auto), max_launches, now_ms, reason,
# launch ('' = any), message record prefix. A dead letter is recorded in the message's record and
# the queue's recent jobs (not as a job event: the scaler counts its own settlements).
SETTLE_LUA = """
local claim, mine = claim_of(KEYS[4], ARGV[2], ARGV[7])
if not mine then return 'gone' end
local mid = claim['message_id']
local mode = ARGV[3]
local reason = ARGV[6]
local now = tonumber(ARGV[5])
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
if mode == 'give_back' then
  if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[2])
    return 'requeued'
  end
  return 'gone'
end
redis.call('HDEL', KEYS[5], mid)
if not dead_letter_body(KEYS[3], KEYS[6], KEYS[7], KEYS[8], ARGV[2], now,
    {reason = reason, at = now, message_id = mid, launches = launches}) then
  return 'gone'
end
local fields = {'queue', claim['queue'], 'redis_message_id', ARGV[2], 'state', 'dead_lettered',
  'reason', reason, 'launch', claim['launch'], 'finished_at', now}
local clear = {'machine_id'}
if claim['machine_id'] then
  fields[#fields + 1] = 'machine_id'
  fields[#fields + 1] = claim['machine_id']
  clear = nil
end
message_record(ARGV[8], mid, fields, clear)
job_ended(nil, KEYS[9], {pool = claim['pool'], queue = claim['queue'], outcome = 'dead_lettered',
  reason = reason, message_id = mid, redis_message_id = ARGV[2], machine_id = claim['machine_id'],
  launch = claim['launch'], enqueued_at = claim['enqueued_at'], started_at = claim['started_at'],
  finished_at = now})
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

# KEYS: per queue, its claims hash and its message bodies hash. ARGV: '1' to read the bodies.
# Per queue: the claims hash flattened (id, record, ...), then the claims' bodies in that order
# (nil where missing), read in one atomic step: a runner's ack, which drops a body and its claim
# together, is either wholly before this read or wholly after it.
LIST_CLAIMS_LUA = """
local out = {}
for i = 1, #KEYS, 2 do
  local flat = redis.call('HGETALL', KEYS[i])
  local bodies = {}
  if ARGV[1] == '1' then
    for j = 1, #flat, 2 do bodies[#bodies + 1] = redis.call('HGET', KEYS[i + 1], flat[j]) end
  end
  out[#out + 1] = flat
  out[#out + 1] = bodies
end
return out
"""

# KEYS: claim queues, then each queue's claims hash. ARGV: the queues, in the same order.
FORGET_QUEUES_LUA = """
for i, q in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then redis.call('SREM', KEYS[1], q) end
end
return 1
"""

class ClaimKeys(QueueKeys):
    """A queue's keys plus what the claim scripts also touch."""

    @property
    def events(self) -> str:
        """The job events the leader drains."""
        return job_events_key(self.prefix)

    @property
    def wake(self) -> str:
        """The channel that wakes the scaler."""
        return wake_channel(self.prefix)

    @property
    def finished(self) -> str:
        """Machines whose job finished."""
        return finished_machines_key(self.prefix)

    @property
    def record_prefix(self) -> str:
        """What every message record's key starts with."""
        return message_record_prefix(self.prefix)

    def claim(self, claim_queues: str) -> list[str]:
        """The keys of ``CLAIM_LUA`` after the fence."""
        return [self.ready, self.msgs, self.claims, self.launches, claim_queues, self.dead,
                self.dead_msgs, self.dead_reasons, self.events, self.recent]

    def settle(self) -> list[str]:
        """The keys of ``SETTLE_LUA`` after the fence."""
        return [self.ready, self.msgs, self.claims, self.launches, self.dead, self.dead_msgs,
                self.dead_reasons, self.recent]

    def finish(self) -> list[str]:
        """The keys of the runner's finish and abort scripts."""
        return [self.claims, self.launches, self.msgs, self.dead, self.dead_msgs, self.events,
                self.dead_reasons, self.recent, self.finished]
