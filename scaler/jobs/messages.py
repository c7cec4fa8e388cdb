"""Messages enqueued over HTTP: how they are written to Redis; and where a message is now.

Write. :meth:`MessageStore.enqueue` writes a :class:`dramatiq.Message` exactly where and how a
dramatiq ``RedisBroker`` producer with ``ScalerMiddleware`` would (``HSET {ns}:{q}.msgs rmid json``
then ``RPUSH {ns}:{q} rmid``; delayed messages go to ``{ns}:{q}.DQ`` with ``options.eta``; JSON
encoded by dramatiq's ``JSONEncoder``; ``options.enqueued_at`` stamped with the time the message
becomes ready; for an immediate message the queue name PUBLISHed on ``{p}:wake``). It does so
in ONE Lua script that also writes the message's record, so that idempotency is atomic: a second
request with the same ``message_id`` finds the record and writes nothing. (The broker's own
dispatch script cannot check a record first, hence not ``broker.enqueue``; the only difference is
that no producer heartbeat is written.)

Record. ``{p}:msg:{message_id}`` is a hash ``{queue, redis_message_id, digest, enqueued_at}``
that expires ``record_ttl_s`` (7 days) after the message is due. A message sent from Python gets
a record when the scaler claims it (see :mod:`scaler.jobs.keys`); the scripts that end a job
write how it ended (``state`` ``done`` or ``dead_lettered`` with its ``reason``, ``machine_id``).
Each write renews its 7 days.

Lookup. :meth:`MessageStore.lookup` reads, in one MULTI snapshot, for the recorded
``redis_message_id`` (``rmid``) of queue ``q``:

1. ``ZSCORE {ns}:{q}.XQ rmid`` -> ``dead_lettered`` (reason from ``HGET {p}:dead-reasons:{q}``,
   field rmid, when the scaler recorded one: see ``scaler.jobs.claims``);
2. ``HGET {p}:claims:{q} rmid`` -> ``claimed`` or ``running`` (machine name/id, launch);
3. ``HEXISTS {ns}:{q}.msgs rmid`` -> ``queued`` if ``LPOS {ns}:{q} rmid`` finds it in the ready
   list, else ``running`` (fetched by a worker-pool worker; machine unknown);
4. ``HGET {ns}:{q}.DQ.msgs rmid`` -> ``queued`` with ``eta_ms`` (delayed until then).

dramatiq gives a message a new rmid whenever it re-enqueues it (a delayed message promoted, a
retry), keeping its ``message_id``. So when the recorded rmid is in none of these places, the
queue's ``.msgs``, ``.DQ.msgs`` and ``.XQ.msgs`` hashes are searched with HSCAN (incremental: Redis
is never blocked) for the ``message_id``; a hit updates the record, so the next lookup is O(1).
Before that search, a record whose job ended (``done``, ``dead_lettered``) answers that, with its
reason and machine (a dead letter retried since has a new record state). Not found anywhere ->
``done``. No record -> ``None`` (unknown, or older than the TTL). The
lookup is a snapshot: a message moving between two places during the search may, rarely, be
reported ``done`` for that one request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from dramatiq import Message
from dramatiq.common import dq_name, q_name
from dramatiq.encoder import JSONEncoder

from scaler.jobs.keys import MESSAGE_RECORD_TTL_S, QueueKeys, message_record_key, wake_channel

__all__ = [
    "DEFAULT_RECORD_TTL_S",
    "STATES",
    "Enqueued",
    "MessageState",
    "MessageStore",
    "build_message",
]

DEFAULT_RECORD_TTL_S = MESSAGE_RECORD_TTL_S
STATES = ("queued", "claimed", "running", "done", "dead_lettered")

_ENCODER = JSONEncoder()

# KEYS: record, target list, target msgs hash. ARGV: rmid, data, queue, digest, enqueued_at,
# ttl_s, wake channel ('' for none). Returns the existing record (HGETALL), or an empty table
# when it wrote the message.
_ENQUEUE_LUA = """
local existing = redis.call('HGETALL', KEYS[1])
if #existing > 0 then return existing end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'queue', ARGV[3], 'redis_message_id', ARGV[1],
           'digest', ARGV[4], 'enqueued_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], ARGV[3]) end
return {}
"""

# Point the record at the message's current rmid, only if the record still exists.
_RELINK_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'redis_message_id', ARGV[1])
end
return 1
"""


def build_message(
    *,
    queue: str,
    actor: str,
    args: list[Any],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    message_id: str | None,
    now_ms: int,
    delay_ms: int | None = None,
) -> Message[Any]:
    """The message a dramatiq producer would enqueue: what ``RedisBroker.enqueue`` adds
    (``redis_message_id``; ``eta`` and the ``.DQ`` queue when delayed) plus ``enqueued_at``."""
    message: Message[Any] = Message(
        queue_name=queue,
        actor_name=actor,
        args=tuple(args),
        kwargs=kwargs,
        options=dict(options),
        message_id=message_id or str(uuid.uuid4()),
        message_timestamp=now_ms,
    )
    message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
    if delay_ms is not None:
        message = message.copy(queue_name=dq_name(queue), options={"eta": now_ms + delay_ms})
    # As ScalerMiddleware: the stamp is when the message becomes ready.
    message.options["enqueued_at"] = now_ms + (delay_ms or 0)
    return message


@dataclass(frozen=True)
class Enqueued:
    """The outcome of :meth:`MessageStore.enqueue`: ``created`` is False when a record with this
    message_id already existed (nothing was written); the other fields are the record's."""

    created: bool
    message_id: str
    queue: str
    redis_message_id: str
    digest: str


@dataclass(frozen=True)
class MessageState:
    """Where a message is now; ``state`` is one of :data:`STATES` (``queued`` with ``eta_ms``
    means delayed until then)."""

    message_id: str
    queue: str
    state: str
    redis_message_id: str | None = None
    eta_ms: int | None = None
    machine_name: str | None = None
    machine_id: str | None = None
    launch: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API representation: the fields that are set."""
        body: dict[str, Any] = {
            "message_id": self.message_id, "queue": self.queue, "state": self.state,
        }
        for name in ("eta_ms", "machine_name", "machine_id", "launch", "reason"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


class MessageStore:
    """Writes HTTP-enqueued messages and looks up their state (see the module docstring).

    Works with clients with or without ``decode_responses``.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        namespace: str,
        prefix: str,
        record_ttl_s: int = DEFAULT_RECORD_TTL_S,
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._prefix = prefix
        self._ttl = record_ttl_s
        self._enqueue = redis.register_script(_ENQUEUE_LUA)
        self._relink = redis.register_script(_RELINK_LUA)

    async def enqueue(self, message: Message[Any], *, digest: str) -> Enqueued:
        """Write ``message`` (from :func:`build_message`) and its record atomically, unless a
        record for its ``message_id`` exists: then nothing is written and that record returned.

        ``digest`` identifies the request body, so a caller can tell a retry from a reuse.
        """
        queue = q_name(message.queue_name)
        rmid = message.options["redis_message_id"]
        target = QueueKeys(self._ns, self._prefix, message.queue_name)
        delayed = "eta" in message.options
        raw = await self._enqueue(
            keys=[message_record_key(self._prefix, message.message_id), target.ready,
                  target.msgs],
            args=[
                rmid, _ENCODER.encode(message.asdict()), queue, digest,
                message.options["enqueued_at"], self._ttl + self._delay_s(message),
                "" if delayed else wake_channel(self._prefix),
            ],
        )
        if not raw:
            return Enqueued(True, message.message_id, queue, rmid, digest)
        record = _pairs(list(raw))
        return Enqueued(
            False, message.message_id, record.get("queue", ""),
            record.get("redis_message_id", ""), record.get("digest", ""),
        )

    @staticmethod
    def _delay_s(message: Message[Any]) -> int:
        eta = message.options.get("eta")
        return 0 if eta is None else max(0, (int(eta) - message.message_timestamp) // 1000)

    async def lookup(self, message_id: str) -> MessageState | None:
        """The state of a message, or None if it has no record (see the module docstring)."""
        raw = await self._redis.hgetall(message_record_key(self._prefix, message_id))
        record = {_s(k): _s(v) for k, v in raw.items()}
        if "queue" not in record:
            return None
        queue, rmid = record["queue"], record.get("redis_message_id", "")
        for attempt in range(3):
            state = await self._snapshot(message_id, queue, rmid)
            if state is not None and state.state == "dead_lettered" and (
                record.get("state") == "dead_lettered"
                and record.get("redis_message_id") == rmid
            ):
                ended = _ended(message_id, queue, rmid, record)
                return replace(state, reason=state.reason or ended.reason,
                               machine_id=ended.machine_id, launch=ended.launch)
            if state is not None:
                return state
            if attempt == 0 and record.get("state") in ("done", "dead_lettered"):
                return _ended(message_id, queue, rmid, record)
            found = await self._search(message_id, queue)
            if found is None:
                break
            rmid = found
            await self._relink(keys=[message_record_key(self._prefix, message_id)], args=[rmid])
        return MessageState(message_id, queue, "done")

    async def _snapshot(self, message_id: str, queue: str, rmid: str) -> MessageState | None:
        k = QueueKeys(self._ns, self._prefix, queue)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zscore(k.dead, rmid)
            pipe.hget(k.dead_reasons, rmid)
            pipe.hget(k.claims, rmid)
            pipe.hexists(k.msgs, rmid)
            pipe.lpos(k.ready, rmid)
            pipe.hget(k.delayed_msgs, rmid)
            dead, reason, claim, in_msgs, position, delayed = await pipe.execute()

        def state(name: str, **extra: Any) -> MessageState:
            return MessageState(message_id, queue, name, redis_message_id=rmid, **extra)

        if dead is not None:
            why = _decode(_s(reason)).get("reason") if reason is not None else None
            return state("dead_lettered", reason=str(why) if why else None)
        if claim is not None:
            return _claim_state(state, _s(claim))
        if in_msgs:
            return state("queued" if position is not None else "running")
        if delayed is not None:
            eta = _decode(_s(delayed)).get("options", {}).get("eta")
            return state("queued", eta_ms=int(eta) if isinstance(eta, int | float) else None)
        return None

    async def _search(self, message_id: str, queue: str) -> str | None:
        """The current rmid of ``message_id`` in the queue's hashes (see module docstring)."""
        needle = f'"message_id":"{message_id}"'
        k = QueueKeys(self._ns, self._prefix, queue)
        for key in (k.dead_msgs, k.msgs, k.delayed_msgs):
            async for field, value in self._redis.hscan_iter(key, count=500):
                text = _s(value)
                if needle in text and _decode(text).get("message_id") == message_id:
                    return _s(field)
        return None


def _decode(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _ended(message_id: str, queue: str, rmid: str, record: Mapping[str, str]) -> MessageState:
    """A message whose record says how its job ended (its dead letter may be purged since)."""
    launch = record.get("launch", "")
    return MessageState(
        message_id, queue, record["state"], redis_message_id=rmid or None,
        machine_id=record.get("machine_id") or None,
        launch=int(launch) if launch.isdigit() else None,
        reason=(record.get("reason") or None) if record["state"] == "dead_lettered" else None,
    )


def _claim_state(state: Callable[..., MessageState], raw: str) -> MessageState:
    claim: Mapping[str, Any] = _decode(raw)
    launch = claim.get("launch")
    machine_id = claim.get("machine_id")
    return state(
        "running" if claim.get("state") == "running" else "claimed",
        machine_name=str(claim["machine_name"]) if claim.get("machine_name") else None,
        machine_id=str(machine_id) if machine_id else None,
        launch=launch if isinstance(launch, int) else None,
    )
