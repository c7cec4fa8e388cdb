"""Dead-lettered messages of a queue: list them with their reason, send them back, or purge them.

dramatiq keeps dead letters in ``{ns}:{q}.XQ`` (ids by time) and ``.XQ.msgs`` (bodies) and has no
way to replay them. A retry here re-enqueues the body as dramatiq's own enqueue would: a fresh
``redis_message_id``, the same ``message_id`` (the id the app holds), ``enqueued_at`` now, no
``eta``; it resets the scaler's launch count of the message (it gets ``max_launches`` again),
drops its dead-letter reason and points the message's record at the new id (``queued``). Each
message moves in one script that checks the body is still the one read, so a retry racing
dramatiq's maintenance (which trims old dead letters) or another retry moves a message at most
once and never loses it. A message dead-lettered for its ``max_age`` keeps its
``message_timestamp``: sent back, it is as old as before and is dead-lettered again at claim, as
dramatiq's AgeLimit would skip it (send it anew instead).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis

from scaler.jobs.keys import MESSAGE_RECORD_TTL_S, QueueKeys, message_record_key, wake_channel

__all__ = ["DeadLetter", "DeadLetters"]

# KEYS: xq, xq msgs, ready, msgs, dead reasons, launches, the message's record. ARGV: old id,
# expected body, new id, new body, message_id ('' if none), queue, record ttl s.
_RETRY = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
if ARGV[5] ~= '' then
  redis.call('HDEL', KEYS[6], ARGV[5])
  redis.call('HSET', KEYS[7], 'queue', ARGV[6], 'redis_message_id', ARGV[3], 'state', 'queued')
  redis.call('HDEL', KEYS[7], 'reason', 'finished_at', 'machine_id')
  redis.call('EXPIRE', KEYS[7], ARGV[7])
end
return 1
"""

# KEYS: xq, xq msgs, dead reasons. ARGV: id.
_PURGE = """
local n = redis.call('ZREM', KEYS[1], ARGV[1])
n = n + redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return n > 0 and 1 or 0
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message: ``reason`` is the one recorded when it was dead-lettered (the
    job's error, the runner's set-up failure, ``max_age``, the scaler's: a launch that never ran
    it, invalid machine options, a Fly refusal...) or, failing that, the last line of the job's
    traceback."""

    redis_message_id: str
    message_id: str | None
    actor: str | None
    dead_at_ms: int
    reason: str | None


class DeadLetters:
    """The dead letters of one queue (namespace ``namespace``, scaler prefix ``prefix``)."""

    def __init__(self, client: redis.Redis, namespace: str, prefix: str, queue: str) -> None:
        self._r = client
        self._keys = QueueKeys(namespace, prefix, queue)
        self._wake = wake_channel(prefix)
        self._retry = client.register_script(_RETRY)
        self._purge = client.register_script(_PURGE)

    def newest(self, limit: int | None = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters (None: all), newest first."""
        k = self._keys
        end = -1 if limit is None else max(0, limit - 1)
        ids = cast("list[tuple[bytes, float]]", self._r.zrevrange(k.dead, 0, end, withscores=True))
        if not ids:
            return []
        names = [_text(i) for i, _ in ids]
        bodies = self._r.hmget(k.dead_msgs, names)
        reasons = self._r.hmget(k.dead_reasons, names)
        out = []
        for (_, score), rmid, body, reason in zip(ids, names, bodies, reasons, strict=True):
            msg = _decode(body)
            out.append(DeadLetter(
                redis_message_id=rmid,
                message_id=_str_or_none(msg.get("message_id")),
                actor=_str_or_none(msg.get("actor_name")),
                dead_at_ms=int(score),
                reason=_reason(reason, msg),
            ))
        return out

    def retry(self, ids: Iterable[str] | None = None, now_ms: int = 0) -> list[str]:
        """Send dead letters back to the queue (all if ``ids`` is None); the ids moved. ``ids``
        may name a message by its ``redis_message_id`` or its dramatiq ``message_id``."""
        k = self._keys
        moved = []
        for rmid, body in self._select(ids):
            msg = _decode(body)
            if not msg:
                continue  # not a message we can re-enqueue faithfully: leave it where it is
            new_id = str(uuid.uuid4())
            mid = _str_or_none(msg.get("message_id")) or ""
            options = dict(msg.get("options") or {})
            options.pop("eta", None)
            options["redis_message_id"] = new_id
            options["enqueued_at"] = now_ms
            msg["options"] = options
            done = self._retry(
                keys=[k.dead, k.dead_msgs, k.ready, k.msgs, k.dead_reasons, k.launches,
                      message_record_key(k.prefix, mid)],
                args=[rmid, body, new_id, json.dumps(msg, separators=(",", ":")), mid, k.queue,
                      MESSAGE_RECORD_TTL_S],
            )
            if done:
                moved.append(rmid)
        if moved:
            self._r.publish(self._wake, self._keys.queue)
        return moved

    def purge(self, ids: Iterable[str] | None = None) -> list[str]:
        """Delete dead letters for good (all if ``ids`` is None); the ids removed."""
        k = self._keys
        return [rmid for rmid, _ in self._select(ids)
                if self._purge(keys=[k.dead, k.dead_msgs, k.dead_reasons], args=[rmid])]

    def _select(self, ids: Iterable[str] | None) -> list[tuple[str, bytes | str]]:
        """(redis_message_id, body) of the dead letters ``ids`` names (all if None)."""
        everything = self._r.hgetall(self._keys.dead_msgs)
        found: list[tuple[str, bytes | str]] = []
        wanted = None if ids is None else set(ids)
        for raw_id, body in everything.items():
            rmid = _text(raw_id)
            if wanted is not None and rmid not in wanted:
                mid = _decode(body).get("message_id")
                if mid not in wanted:
                    continue
            found.append((rmid, body))
        return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    try:
        msg = json.loads(body)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _reason(raw: Any, msg: dict[str, Any]) -> str | None:
    if raw is not None:
        try:
            data = json.loads(raw)
        except ValueError:
            return _text(raw)
        if isinstance(data, dict) and data.get("reason"):
            return str(data["reason"])
        return _text(raw)
    traceback = (msg.get("options") or {}).get("traceback")
    if isinstance(traceback, str) and traceback.strip():
        return traceback.strip().splitlines()[-1]
    return None
