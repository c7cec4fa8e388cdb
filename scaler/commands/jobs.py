"""``scaler jobs``: the jobs of each queue, and what to do with dead letters.

- ``scaler jobs [QUEUE...]``: per queue, the counts (ready, delayed, claimed, dead), the newest
  finished jobs (outcome, when, run time, machine, message_id) and the newest dead letters with
  their reason;
- ``scaler jobs retry QUEUE [ID...]``: send dead letters back to the queue (all of the queue's
  when no id is given); an id is the ``message_id`` the app got from ``send()`` or Redis's own;
- ``scaler jobs purge QUEUE (ID... | --all)``: delete dead letters for good.
"""

from __future__ import annotations

import argparse
import sys
import time

import redis

from scaler.commands.common import add_config_argument, load_or_report, redis_of
from scaler.config import Settings
from scaler.jobs.dead_letters import DeadLetters
from scaler.jobs.keys import RECENT_JOBS_MAX, QueueKeys
from scaler.jobs.outcomes import JobEvent

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scaler jobs``."""
    add_config_argument(parser)
    parser.add_argument("--limit", type=int, default=20,
                        help="dead letters shown per queue (default 20)")
    parser.add_argument("--recent", type=int, default=10,
                        help=f"finished jobs shown per queue (default 10, at most "
                             f"{RECENT_JOBS_MAX})")
    parser.add_argument("words", nargs="*", metavar="[retry|purge] QUEUE [ID ...]",
                        help="queues to show; or `retry QUEUE [ID...]`, `purge QUEUE ID...`")
    parser.add_argument("--all", action="store_true",
                        help="with purge: every dead letter of the queue")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``scaler jobs``."""
    settings = load_or_report(args, "jobs")
    if settings is None:
        return 2
    words: list[str] = list(args.words)
    client = redis_of(settings)
    try:
        if words and words[0] in ("retry", "purge"):
            return _change(client, settings, words[0], words[1:], purge_all=args.all)
        return _show(client, settings, words or _queues(settings), args.limit, args.recent)
    except redis.RedisError as exc:
        print(f"scaler jobs: Redis at {settings.redis.safe_url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _queues(settings: Settings) -> list[str]:
    return list(dict.fromkeys(q for p in settings.pools for q in p.queues))


def _letters(client: redis.Redis, settings: Settings, queue: str) -> DeadLetters:
    return DeadLetters(client, settings.redis.namespace, settings.redis.prefix, queue)


def _change(
    client: redis.Redis, settings: Settings, verb: str, rest: list[str], *, purge_all: bool
) -> int:
    if not rest:
        print(f"scaler jobs {verb}: name the queue, e.g. scaler jobs {verb} reports",
              file=sys.stderr)
        return 2
    queue, ids = rest[0], rest[1:]
    letters = _letters(client, settings, queue)
    if verb == "purge" and not ids and not purge_all:
        print("scaler jobs purge: name the ids to delete, or pass --all for every dead "
              f"letter of {queue!r} (they cannot be brought back)", file=sys.stderr)
        return 2
    known = {i for d in letters.newest(limit=None) for i in (d.message_id, d.redis_message_id) if i}
    missing = [i for i in ids if i not in known]
    if verb == "retry":
        moved = letters.retry(ids or None, now_ms=int(time.time() * 1000))
        print(f"{queue}: {len(moved)} dead letter(s) sent back to the queue")
    else:
        moved = letters.purge(ids or None)
        print(f"{queue}: {len(moved)} dead letter(s) deleted")
    if missing:
        print(f"not dead-lettered in {queue}: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _show(
    client: redis.Redis, settings: Settings, queues: list[str], limit: int, recent: int
) -> int:
    if not queues:
        print("no queues: the config has no pools (name queues: scaler jobs QUEUE ...)")
        return 0
    now_ms = time.time() * 1000
    for queue in queues:
        k = QueueKeys(settings.redis.namespace, settings.redis.prefix, queue)
        pipe = client.pipeline(transaction=False)
        pipe.llen(k.ready)
        pipe.hlen(k.delayed_msgs)
        pipe.hlen(k.claims)
        pipe.zcard(k.dead)
        pipe.lrange(k.recent, 0, max(0, recent) - 1)
        ready, delayed, claimed, dead, finished = pipe.execute()
        print(f"{queue}: ready={ready} delayed={delayed} claimed={claimed} dead={dead}")
        for ev in (e for raw in (finished if recent > 0 else ()) if (e := JobEvent.parse(raw))):
            print("  " + _finished_line(ev, now_ms))
        for d in _letters(client, settings, queue).newest(limit):
            age = max(0.0, (now_ms - d.dead_at_ms) / 1000)
            print(f"  dead {d.message_id or d.redis_message_id}  {d.actor or '?'}  "
                  f"{_ago(age)} ago  {d.reason or '(no reason recorded)'}")
        if dead > limit:
            print(f"  ... and {dead - limit} more (--limit)")
    return 0


def _finished_line(ev: JobEvent, now_ms: float) -> str:
    """One finished job: outcome, id, actor, when, run time, machine, and why when it failed."""
    when = "" if ev.finished_at is None else f"{_ago(max(0.0, now_ms - ev.finished_at) / 1e3)} ago"
    ran = "not run" if ev.run_s is None else f"ran {ev.run_s:.1f}s"
    line = (f"{ev.outcome:<13} {ev.message_id or ev.redis_message_id or '?'}  {ev.actor or '?'}  "
            f"{when}  {ran}  on {ev.machine_id or '(no machine)'}")
    return f"{line}  {ev.reason}" if ev.reason else line


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
