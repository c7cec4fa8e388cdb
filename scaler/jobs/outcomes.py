"""How a job ended, recorded where operators look: the job event, the queue's recent jobs, the
message's record and the set of machines whose job finished.

Every script that ends a job (the runner's finish and set-up scripts, the claim script skipping a
message past its ``max_age``, the scaler's dead letters) writes these in the same script that ends
it, with the Lua helpers of :data:`JOB_END_LUA`. :class:`JobEvent` reads one event back (the
recorder's metrics and ``job finished`` lines, ``scaler jobs``). Light to import: the in-machine
runner loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scaler.jobs.keys import MESSAGE_RECORD_TTL_S, RECENT_JOBS_MAX

__all__ = ["JOB_END_LUA", "OUTCOMES", "JobEvent"]

OUTCOMES = ("done", "failed", "dead_lettered")
"""A job event's outcome: ``done`` (acked), ``failed`` (the attempt raised and dramatiq scheduled a
retry, which is a new job), ``dead_lettered`` (in ``{q}.XQ``: dramatiq gave up, the runner could
not set the job up, or the message was past its ``max_age``)."""

JOB_END_LUA = f"""
local RECORD_TTL_S = {MESSAGE_RECORD_TTL_S}
local function message_record(rprefix, mid, fields, clear)
  if rprefix == '' or type(mid) ~= 'string' or mid == '' then return end
  local key = rprefix .. mid
  redis.call('HSET', key, unpack(fields))
  if clear then redis.call('HDEL', key, unpack(clear)) end
  redis.call('EXPIRE', key, RECORD_TTL_S)
end
local function job_ended(events, recent, ev)
  local line = cjson.encode(ev)
  if events then
    redis.call('RPUSH', events, line)
    redis.call('LTRIM', events, -10000, -1)
  end
  redis.call('LPUSH', recent, line)
  redis.call('LTRIM', recent, 0, {RECENT_JOBS_MAX - 1})
end
local function dead_letter_body(msgs, xq, xq_msgs, reasons, rmid, now, why)
  local body = redis.call('HGET', msgs, rmid)
  if not body then return false end
  redis.call('ZADD', xq, now, rmid)
  redis.call('HSET', xq_msgs, rmid, body)
  redis.call('HDEL', msgs, rmid)
  redis.call('HSET', reasons, rmid, cjson.encode(why))
  return true
end
"""
"""Lua helpers, prepended to the scripts that end a job:

- ``message_record(record prefix, message_id, {field, value, ...}, {field, ...} | nil)``: set
  (and clear) fields of the message's record and renew its TTL; no-op without a message_id;
- ``job_ended(events key | nil, recent key, event table)``: append the event (capped) for the
  leader to drain (``nil``: the scaler counted it itself) and to the queue's recent jobs;
- ``dead_letter_body(msgs, xq, xq msgs, dead reasons, rmid, now, why table)``: move the body to
  the dead letters as dramatiq's nack does and record why; false when there is no body.
"""


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One job's end. Times are ms since the epoch; ``reason`` is why it failed or was
    dead-lettered (the job's error, the runner's set-up failure, ``max_age``, the scaler's
    reason); ``cause`` the bounded kind of a dead letter (``job_failed``, ``setup``, ``max_age``;
    ``None`` for the scaler's own, counted where they are made)."""

    pool: str
    queue: str
    outcome: str
    message_id: str | None = None
    redis_message_id: str | None = None
    machine_id: str | None = None
    launch: int | None = None
    actor: str | None = None
    reason: str | None = None
    cause: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def run_s(self) -> float | None:
        """Seconds from the runner taking the job to its end (``None``: it never started)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at) / 1e3)

    @property
    def wait_s(self) -> float | None:
        """Seconds from the message becoming ready to the runner taking it."""
        if self.started_at is None or self.enqueued_at is None:
            return None
        return max(0.0, (self.started_at - self.enqueued_at) / 1e3)

    @classmethod
    def parse(cls, raw: str | bytes) -> JobEvent | None:
        """The event in ``raw`` JSON, or ``None`` when it is not one. Events of runners from
        before outcomes were named (``ack``, ``nack``) read as ``done`` and ``dead_lettered``."""
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("pool"), str):
            return None
        outcome = {"ack": "done", "nack": "dead_lettered"}.get(
            str(data.get("outcome")), str(data.get("outcome"))
        )
        if outcome not in OUTCOMES:
            return None
        launch = data.get("launch")
        return cls(
            pool=data["pool"],
            queue=str(data.get("queue") or ""),
            outcome=outcome,
            message_id=_opt_str(data.get("message_id")),
            redis_message_id=_opt_str(data.get("redis_message_id")),
            machine_id=_opt_str(data.get("machine_id")),
            launch=int(launch) if isinstance(launch, int | float) else None,
            actor=_opt_str(data.get("actor")),
            reason=_opt_str(data.get("reason")),
            cause=_opt_str(data.get("cause")) or (
                "job_failed" if data.get("outcome") == "nack" else None),
            enqueued_at=_opt_num(data.get("enqueued_at")),
            started_at=_opt_num(data.get("started_at")),
            finished_at=_opt_num(data.get("finished_at")),
        )
