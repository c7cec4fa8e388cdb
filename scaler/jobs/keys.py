"""The Redis key contract: every key fly-scaler reads or writes, dramatiq's and its own, named once.

dramatiq's ``RedisBroker`` (namespace ``ns``, default ``dramatiq``; queue ``q``):

====================  ======  =============================================================
key                   type    what
====================  ======  =============================================================
``{ns}:{q}``          LIST    ready message ids (``redis_message_id``), oldest at the head
``{ns}:{q}.msgs``     HASH    id -> message JSON (ready, held by a worker, or claimed by us)
``{ns}:{q}.DQ``       LIST    the delay queue's ready ids (``.DQ.msgs`` its bodies)
``{ns}:{q}.XQ``       ZSET    dead-lettered ids by time (``.XQ.msgs`` their bodies)
``{ns}:__heartbeats__``  ZSET  worker ids by last heartbeat (maintenance requeues the dead's)
====================  ======  =============================================================

The scaler's own (prefix ``p``, default ``fly-scaler``):

==========================  ======  =========================================================
key                         type    what
==========================  ======  =========================================================
``{p}:claims:{q}``          HASH    id -> claim record JSON (see :mod:`scaler.jobs.claims`)
``{p}:claim-queues``        SET     every queue with claims, served by a pool or not any more
``{p}:launches:{q}``        HASH    dramatiq message_id -> machines launched for it
``{p}:dead-reasons:{q}``    HASH    id -> why it was dead-lettered (the scaler's, the runner's
                                    set-up failure, max_age, or the job's own error)
``{p}:job-events``          LIST    job-end events, drained by the leader into metrics and logs
``{p}:recent:{q}``          LIST    the newest job-end events of a queue, newest first (100)
``{p}:finished``            HASH    machine id -> when its job finished (the machine is exiting)
``{p}:wake``                PUBSUB  a queue name here wakes the scaler
``{p}:orphans``             HASH    machine id -> when the reaper marked it an orphan
``{p}:slots``               HASH    warm slot machine id -> its last binding (see
                                    :mod:`scaler.jobs.slots`)
``{p}:leader``              STRING  ``{owner}:{token}`` of the leader lease (``:token`` counter)
``{p}:status``              STRING  the leader's last tick, for ``scaler status``
``{p}:rl:{action}:{scope}`` HASH    a shared rate-limit bucket (replicas share Fly's budget)
``{p}:msg:{message_id}``    HASH    a message's record: where it is and how it ended (7 days)
==========================  ======  =========================================================

A message's record (:func:`message_record_key`) is written when it is enqueued over HTTP, when
the scaler claims it (however it was sent), when a dead letter is sent back, and when its job ends
(the runner's scripts, the scaler's settlements); every write renews its TTL
(:data:`MESSAGE_RECORD_TTL_S`): about 200 bytes per claimed message for a week. Fields:
``queue``, ``redis_message_id`` (its current id), ``state`` (``queued``, ``claimed``, ``done``,
``dead_lettered``), ``reason`` (why it was dead-lettered), ``machine_id``, ``launch``,
``finished_at`` (ms); an HTTP-enqueued message also has ``digest`` and ``enqueued_at`` (its
idempotency).

A message's enqueue time is its ``options.enqueued_at`` (stamped by the enqueue middleware: when
the message became ready), else dramatiq's ``message_timestamp``: :data:`ENQUEUED_AT_LUA`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ENQUEUED_AT_LUA",
    "MESSAGE_RECORD_TTL_S",
    "RECENT_JOBS_MAX",
    "QueueKeys",
    "claim_queues_key",
    "claims_key",
    "dead_reasons_key",
    "finished_machines_key",
    "heartbeats_key",
    "job_events_key",
    "launches_key",
    "leader_key",
    "message_record_key",
    "message_record_prefix",
    "orphans_key",
    "rate_key",
    "recent_jobs_key",
    "slots_key",
    "status_key",
    "wake_channel",
]

ENQUEUED_AT_LUA = """
local function enqueued_at(msg)
  if type(msg) ~= 'table' then return nil end
  local opts = msg['options']
  if type(opts) == 'table' and type(opts['enqueued_at']) == 'number' then
    return opts['enqueued_at']
  end
  if type(msg['message_timestamp']) == 'number' then return msg['message_timestamp'] end
  return nil
end
"""
"""A Lua function ``enqueued_at(decoded_message)``: ms, or nil. Prepend it to a script."""

MESSAGE_RECORD_TTL_S = 7 * 24 * 3600
"""How long a message's record lives after its last change (dramatiq keeps dead letters as long)."""

RECENT_JOBS_MAX = 100
"""Job-end events kept per queue in ``{p}:recent:{q}``."""


def claims_key(prefix: str, queue: str) -> str:
    """``{prefix}:claims:{queue}``: redis_message_id -> claim record JSON."""
    return f"{prefix}:claims:{queue}"


def claim_queues_key(prefix: str) -> str:
    """``{prefix}:claim-queues``: SET of every queue that has (or had) claims, so that claims of a
    queue no pool serves any more (a pool renamed or removed) are still found and settled."""
    return f"{prefix}:claim-queues"


def launches_key(prefix: str, queue: str) -> str:
    """``{prefix}:launches:{queue}``: dramatiq message_id -> launch count."""
    return f"{prefix}:launches:{queue}"


def dead_reasons_key(prefix: str, queue: str) -> str:
    """``{prefix}:dead-reasons:{queue}``: redis_message_id -> JSON ``{"reason", "at", "message_id",
    "launches", "cause"}``: why it was dead-lettered (dramatiq's own dead letters carry the job's
    error, written by the runner's finish script)."""
    return f"{prefix}:dead-reasons:{queue}"


def job_events_key(prefix: str) -> str:
    """LIST of JSON job events appended when a job ends (capped at 10,000; the fields are
    :class:`scaler.jobs.outcomes.JobEvent`'s): by the runner's finish and set-up scripts, and by
    the claim script for a message past its ``max_age``. The leader drains it each tick into its
    metrics and one ``job finished`` log line per job."""
    return f"{prefix}:job-events"


def recent_jobs_key(prefix: str, queue: str) -> str:
    """``{prefix}:recent:{queue}``: LIST of the queue's newest job-end events (the JSON of
    :func:`job_events_key`, also the scaler's own dead letters), newest first, capped at
    :data:`RECENT_JOBS_MAX`; ``scaler jobs`` shows them."""
    return f"{prefix}:recent:{queue}"


def finished_machines_key(prefix: str) -> str:
    """``{prefix}:finished``: HASH of machine id -> ms when the job it ran finished (written by
    the runner's scripts with the end of the claim). Such a machine is exiting, not an orphan; the
    observer drops the entry once no listing shows the machine."""
    return f"{prefix}:finished"


def wake_channel(prefix: str) -> str:
    """``{prefix}:wake``: the pub/sub channel on which a queue name wakes the scaler
    (:class:`scaler.loop.wake.Waker` listens; enqueues and finished jobs publish)."""
    return f"{prefix}:wake"


def slots_key(prefix: str) -> str:
    """``{prefix}:slots``: HASH of warm slot machine id -> its last binding (JSON)."""
    return f"{prefix}:slots"


def orphans_key(prefix: str) -> str:
    """Hash of machine id -> epoch seconds at which the reaper first marked it an orphan."""
    return f"{prefix}:orphans"


def leader_key(prefix: str) -> str:
    """The leader lease (``{prefix}:leader``; its fencing-token counter is ``...:token``)."""
    return f"{prefix}:leader"


def status_key(prefix: str) -> str:
    """Where the leader publishes its last tick for ``scaler status`` and ``scaler dev``."""
    return f"{prefix}:status"


def rate_key(prefix: str, action: str, scope: str) -> str:
    """A shared rate-limit bucket of one Fly action and scope (``app:NAME``, ``machine:ID``)."""
    return f"{prefix}:rl:{action}:{scope}"


def message_record_prefix(prefix: str) -> str:
    """``{prefix}:msg:``: what a message's record key starts with (the Lua scripts, which learn
    the message_id only from the claim or the body, append it)."""
    return f"{prefix}:msg:"


def message_record_key(prefix: str, message_id: str) -> str:
    """The record of a message, by its dramatiq ``message_id`` (see the table above)."""
    return message_record_prefix(prefix) + message_id


def heartbeats_key(namespace: str) -> str:
    """dramatiq's worker heartbeats (maintenance requeues the messages of workers gone silent)."""
    return f"{namespace}:__heartbeats__"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Every key of one queue, dramatiq's and ours."""

    namespace: str
    prefix: str
    queue: str

    @property
    def ready(self) -> str:
        """dramatiq's ready list."""
        return f"{self.namespace}:{self.queue}"

    @property
    def msgs(self) -> str:
        """Message bodies by redis_message_id."""
        return f"{self.ready}.msgs"

    @property
    def delayed(self) -> str:
        """The delay queue (itself a dramatiq queue, ``q.DQ``)."""
        return f"{self.ready}.DQ"

    @property
    def delayed_msgs(self) -> str:
        """Delayed message bodies."""
        return f"{self.ready}.DQ.msgs"

    @property
    def dead(self) -> str:
        """Dead-lettered ids (ZSET by time)."""
        return f"{self.ready}.XQ"

    @property
    def dead_msgs(self) -> str:
        """Dead-lettered bodies."""
        return f"{self.ready}.XQ.msgs"

    @property
    def claims(self) -> str:
        """Our claims of this queue."""
        return claims_key(self.prefix, self.queue)

    @property
    def launches(self) -> str:
        """Launch counts by dramatiq message_id."""
        return launches_key(self.prefix, self.queue)

    @property
    def dead_reasons(self) -> str:
        """Why a message was dead-lettered."""
        return dead_reasons_key(self.prefix, self.queue)

    @property
    def recent(self) -> str:
        """The queue's newest job-end events."""
        return recent_jobs_key(self.prefix, self.queue)
