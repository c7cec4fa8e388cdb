"""The in-machine runner's synchronous handle on its one bound claim, and the two scripts that
end it: finish (ack or nack the message) and abort (a set-up failure dead-letters it at once).

The claim record is documented in :mod:`scaler.jobs.claims`; how a job's end is recorded in
:mod:`scaler.jobs.outcomes`. Imported by the runner, so it stays light: only the key and script
helpers and, for type checking, redis.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from scaler.jobs.claim_scripts import GUARD_LUA, MARK_LUA, ClaimKeys
from scaler.jobs.outcomes import JOB_END_LUA

if TYPE_CHECKING:
    import redis

__all__ = ["ABORT_LUA", "ERROR_MAX", "FINISH_LUA", "FinishOutcome", "RunnerClaim", "stored_error"]

ERROR_MAX = 1000
"""Characters of a job's error or a set-up reason kept in its records."""

FinishOutcome = Literal["none", "ack", "nack"]

_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*):[^/@\s]*@")


def stored_error(text: str | None) -> str:
    """A job's error or a set-up reason as it is kept in Redis (and shown by ``scaler jobs`` and
    the status API): at most :data:`ERROR_MAX` characters, with URL passwords (a Redis or
    database URL in a connection error) replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1:***@", text or "")[:ERROR_MAX]

# KEYS: claims, launches, msgs, xq, xq msgs, job events, dead reasons, recent jobs, finished
# machines. ARGV: rmid, outcome (none|ack|nack), now_ms, wake channel, launch ('' = any),
# machine id, error ('' = none: the job's exception, if it raised), message record prefix,
# message_id, actor.
# Ack/nack on the message and the end of the claim happen together: a crash between the two
# would otherwise strand a body with no claim and no place in the ready list. An ack or nack also
# records how the job ended: its machine in the finished machines (it is exiting, not an orphan),
# the message's record, and (with the claim) a job event and the queue's recent jobs; and it wakes
# the scaler: the job's machine is about to go, and its cap slot with it. An ack after an error
# is an attempt that failed with a dramatiq retry scheduled (outcome 'failed'); a nack is a dead
# letter, its reason the job's error.
# A runner of an older launch that finishes while a newer launch holds the claim (the job was given
# back while it ran) still acks or nacks: the job did run. It ends the newer claim only when that
# claim's machine has not started the job, so the job does not run a second time.
FINISH_LUA = """
local c, mine = claim_of(KEYS[1], ARGV[1], ARGV[5])
if c and not mine and c['state'] == 'running' and ARGV[2] == 'none' then return 0 end
local now = tonumber(ARGV[3])
local mid = ARGV[9]
if c then mid = c['message_id'] end
local err = ARGV[7]
local outcome = nil
if ARGV[2] == 'ack' then
  redis.call('HDEL', KEYS[3], ARGV[1])
  outcome = 'done'
  if err ~= '' then outcome = 'failed' end
elseif ARGV[2] == 'nack' then
  outcome = 'dead_lettered'
  if err == '' then err = 'failed' end
  dead_letter_body(KEYS[3], KEYS[4], KEYS[5], KEYS[7], ARGV[1], now, {reason = err, at = now,
    message_id = mid, launches = c and c['launch'], cause = 'job_failed'})
end
if outcome then
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[9], ARGV[6], now) end
  if outcome == 'dead_lettered' then
    message_record(ARGV[8], mid, {'state', 'dead_lettered', 'reason', err, 'machine_id', ARGV[6],
      'finished_at', now})
  elseif outcome == 'done' then
    message_record(ARGV[8], mid, {'state', 'done', 'machine_id', ARGV[6], 'finished_at', now},
      {'reason'})
  else
    -- the retry is a new message (a new redis id): the lookup finds it
    message_record(ARGV[8], mid, {'state', 'queued'}, {'reason', 'finished_at'})
  end
end
if not c then return 0 end
if not mine and c['state'] == 'running' then return 0 end
redis.call('HDEL', KEYS[2], c['message_id'])
redis.call('HDEL', KEYS[1], ARGV[1])
if outcome then
  local ev = {pool = c['pool'], queue = c['queue'], outcome = outcome, message_id = mid,
    redis_message_id = ARGV[1], machine_id = ARGV[6], launch = c['launch'], actor = ARGV[10],
    enqueued_at = c['enqueued_at'], started_at = c['started_at'], finished_at = now}
  if err ~= '' then ev['reason'] = err end
  if outcome == 'dead_lettered' then ev['cause'] = 'job_failed' end
  job_ended(KEYS[6], KEYS[8], ev)
  redis.call('PUBLISH', ARGV[4], c['queue'])
end
if not mine then return 0 end
return 1
"""

# KEYS: the same as FINISH_LUA's. ARGV: rmid, launch ('' = any), machine id, now_ms, reason, wake
# channel, message record prefix.
# The runner cannot run its message (the actors module does not import, the actor is not
# declared, the body is not a message of this queue): exit 2 would only cost another machine per
# launch, each failing the same way. The claim of this launch (unbound, or bound to this machine)
# ends and its message is dead-lettered at once with the runner's reason. Returns 1 when it was.
ABORT_LUA = """
local c, mine = claim_of(KEYS[1], ARGV[1], ARGV[2])
if not mine then return 0 end
if c['machine_id'] and c['machine_id'] ~= ARGV[3] then return 0 end
local now = tonumber(ARGV[4])
local mid = c['message_id']
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], mid)
redis.call('HSET', KEYS[9], ARGV[3], now)
redis.call('PUBLISH', ARGV[6], c['queue'])
if not dead_letter_body(KEYS[3], KEYS[4], KEYS[5], KEYS[7], ARGV[1], now, {reason = ARGV[5],
    at = now, message_id = mid, launches = c['launch'], cause = 'setup'}) then
  return 0
end
message_record(ARGV[7], mid, {'queue', c['queue'], 'redis_message_id', ARGV[1],
  'state', 'dead_lettered', 'reason', ARGV[5], 'machine_id', ARGV[3], 'launch', c['launch'],
  'finished_at', now})
job_ended(KEYS[6], KEYS[8], {pool = c['pool'], queue = c['queue'], outcome = 'dead_lettered',
  cause = 'setup', reason = ARGV[5], message_id = mid, redis_message_id = ARGV[1],
  machine_id = ARGV[3], launch = c['launch'], enqueued_at = c['enqueued_at'],
  started_at = c['started_at'], finished_at = now})
return 1
"""


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
        self._finish = client.register_script(GUARD_LUA + JOB_END_LUA + FINISH_LUA)
        self._abort = client.register_script(GUARD_LUA + JOB_END_LUA + ABORT_LUA)

    def mark_running(self, machine_id: str, now_ms: int) -> bool:
        """Record that this machine runs the job; False if the claim is gone, another launch's,
        or bound to another machine."""
        args: list[str | int] = [self.redis_message_id, machine_id, now_ms, self._launch_arg]
        return bool(self._mark(keys=[self._keys.claims], args=args))

    def heartbeat(self, machine_id: str, now_ms: int) -> bool:
        """Refresh ``heartbeat_at`` (the same write as :meth:`mark_running`); False if the claim
        is gone or not ours."""
        return self.mark_running(machine_id, now_ms)

    def finish(
        self, outcome: FinishOutcome, now_ms: int, *, machine_id: str = "",
        error: str | None = None, message_id: str = "", actor: str = "",
    ) -> bool:
        """Atomically ack (``"ack"``: drop the body) or nack (``"nack"``: move it to ``{q}.XQ``,
        ``error`` its reason) the message and end the claim; record how the job ended
        (``error`` on an ack: the attempt failed and dramatiq scheduled a retry) and that
        ``machine_id`` is finishing. False if there was no claim any more."""
        return bool(
            self._finish(
                keys=self._keys.finish(),
                args=[self.redis_message_id, outcome, now_ms, self._keys.wake, self._launch_arg,
                      machine_id, stored_error(error), self._keys.record_prefix,
                      message_id, actor],
            )
        )

    def abort(self, machine_id: str, reason: str, now_ms: int) -> bool:
        """The message cannot be run here (set-up failure): end the claim of this launch and
        dead-letter the message with ``reason`` at once. False if the claim is gone, another
        launch's or another machine's, or its message is gone."""
        return bool(
            self._abort(
                keys=self._keys.finish(),
                args=[self.redis_message_id, self._launch_arg, machine_id, now_ms,
                      stored_error(reason), self._keys.wake, self._keys.record_prefix],
            )
        )
