"""``scaler record``: write what the scaler observes into a trace, without touching the loop.

The recorder is a reader beside the scaler, on its own connections, polling what is already
observable:

- enqueues: each served queue's message bodies (dramatiq's ``{ns}:{q}.msgs`` hash): a body not
  seen before is an enqueue at its ``enqueued_at`` stamp, with its ``fly_machine`` options. A
  message that is enqueued and ends between two polls is still recorded, from its job event;
- job ends: each queue's recent job events (``{p}:recent:{q}``, the runners' job-end events, the
  newest 100; the leader's ``{p}:job-events`` list is left to the leader to drain);
- machines: one listing per app every ``list_interval`` (spending the same shared rate budget as
  the scaler): ``created`` and ``started`` at Fly's timestamps, ``gone`` when the listing no
  longer shows it or shows it destroyed.

:class:`TraceWriter` writes one file, or rotates it (``[record]`` in the config).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import redis.asyncio as aioredis
import structlog

from scaler.config import Settings
from scaler.fly.client import AsyncFlyClient
from scaler.jobs.keys import QueueKeys, recent_jobs_key
from scaler.jobs.outcomes import JobEvent
from scaler.loop.machines import META_SCALER, machine_view
from scaler.policy.types import MachineView
from scaler.replay.trace import EnqueueEvent, Event, Header, JobEndEvent, MachineEvent, dump_line

__all__ = ["TraceRecorder", "TraceWriter", "machine_changes", "recorder_for"]

log = structlog.get_logger(__name__)


class _Bounded:
    """A set that forgets its oldest members past ``size`` (the recorder runs for days)."""

    def __init__(self, size: int = 200_000) -> None:
        self.size = size
        self._items: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> bool:
        """Add ``item``; whether it was new."""
        if item in self._items:
            return False
        self._items[item] = None
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return True


class TraceWriter:
    """Appends events to ``path``, a header first; with ``rotate_every`` seconds, the file is
    renamed ``<stem>.<UTC time>.jsonl`` that often and a new one begun, keeping ``keep`` old
    ones."""

    def __init__(self, path: Path, header: Callable[[float], Header], *,
                 rotate_every: float | None = None, keep: int = 24,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.header = header
        self.rotate_every = rotate_every
        self.keep = keep
        self.clock = clock
        self.lines = 0
        self._fh: TextIO | None = None
        self._opened_at = 0.0

    def _open(self) -> TextIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._opened_at = self.clock()
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close)
            self._fh.write(dump_line(self.header(self._opened_at)))
        return self._fh

    def write(self, events: Iterable[Event]) -> None:
        """Write events (and rotate first when the file is due)."""
        if (self.rotate_every is not None and self._fh is not None
                and self.clock() - self._opened_at >= self.rotate_every):
            self.rotate()
        fh = self._open()
        for e in events:
            fh.write(dump_line(e))
            self.lines += 1
        fh.flush()

    def rotate(self) -> Path | None:
        """Close the current file under a timestamped name; drop the oldest past ``keep``."""
        if self._fh is None:
            return None
        self._fh.close()
        self._fh = None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._opened_at))
        done = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        self.path.rename(done)
        old = sorted(self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}"))
        for stale in old[: max(0, len(old) - self.keep)]:
            stale.unlink(missing_ok=True)
        return done

    def close(self) -> None:
        """Flush and close (the header is written even if nothing happened)."""
        self._open().close()
        self._fh = None


class TraceRecorder:
    """Polls Redis (and Fly listings, when a client is given) and writes a trace."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, writer: TraceWriter, *,
                 fly: AsyncFlyClient | None = None, poll_interval: float = 0.25,
                 list_interval: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.redis = redis
        self.writer = writer
        self.fly = fly
        self.poll_interval = poll_interval
        self.list_interval = list_interval
        self.clock = clock
        ns, prefix = settings.redis.namespace, settings.redis.prefix
        self.queues = {q: QueueKeys(ns, prefix, q) for p in settings.pools for q in p.queues}
        self.pool_of_queue = {q: p.name for p in settings.pools for q in p.queues}
        self.prefix = prefix
        self.pools = {p.name: p for p in settings.pools}
        self._bodies: dict[str, set[str]] = {q: set() for q in self.queues}
        self._enqueued = _Bounded()
        self._ended = _Bounded()
        self._machines: dict[str, MachineView] = {}
        self._last_list = float("-inf")

    async def poll(self) -> list[Event]:
        """One poll: the events seen since the last one (also written)."""
        events: list[Event] = []
        for queue, keys in self.queues.items():
            found = [*await self._enqueues(queue, keys), *await self._job_ends(queue)]
            self.writer.write(found)  # now: what was marked seen is never lost to a later error
            events.extend(found)
        now = self.clock()
        if self.fly is not None and now - self._last_list >= self.list_interval:
            self._last_list = now
            changes = await self._listings(now)
            self.writer.write(changes)
            events.extend(changes)
        return events

    async def run(self, stop: asyncio.Event, duration: float | None = None) -> None:
        """Poll until ``stop`` is set or ``duration`` seconds have passed."""
        started = self.clock()
        self.writer.write(())  # the header now: the file exists from the start
        while not stop.is_set():
            try:
                await self.poll()
            except Exception as exc:  # a Redis or Fly hiccup costs a poll, not the trace
                log.warning("record poll failed", error=str(exc))
            if duration is not None and self.clock() - started >= duration:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)

    async def _enqueues(self, queue: str, keys: QueueKeys) -> list[EnqueueEvent]:
        ids = {i.decode() if isinstance(i, bytes) else str(i)
               for i in await self.redis.hkeys(keys.msgs)}
        new = sorted(ids - self._bodies[queue])
        self._bodies[queue] = ids
        if not new:
            return []
        bodies = await self.redis.hmget(keys.msgs, new)
        out: list[EnqueueEvent] = []
        for raw in bodies:
            event = _enqueue_of(queue, raw, self.clock())
            if event is not None and self._enqueued.add(event.message_id):
                out.append(event)
        return out

    async def _job_ends(self, queue: str) -> list[Event]:
        raws = await self.redis.lrange(recent_jobs_key(self.prefix, queue), 0, -1)
        out: list[Event] = []
        for raw in reversed(raws):
            ev = JobEvent.parse(raw)
            if ev is None or ev.message_id is None or ev.finished_at is None:
                continue
            if not self._ended.add(f"{ev.message_id}:{ev.launch}:{ev.finished_at}"):
                continue
            if ev.enqueued_at is not None and self._enqueued.add(ev.message_id):
                out.append(EnqueueEvent(ev.enqueued_at / 1e3, queue, ev.message_id))
            out.append(JobEndEvent(
                ev.finished_at / 1e3, queue, ev.message_id, ev.outcome, pool=ev.pool,
                enqueued_at=None if ev.enqueued_at is None else ev.enqueued_at / 1e3,
                started_at=None if ev.started_at is None else ev.started_at / 1e3,
                run_s=ev.run_s, machine_id=ev.machine_id, launch=ev.launch,
            ))
        return out

    async def _listings(self, now: float) -> list[MachineEvent]:
        assert self.fly is not None
        seen: dict[str, MachineView] = {}
        for app in sorted({p.app for p in self.settings.pools}):
            machines = await self.fly.list_machines(
                app, metadata={META_SCALER: self.settings.scaler.id})
            for m in machines:
                v = machine_view(m, app, self.settings.scaler.id, self.pools)
                if v is not None and v.state != "destroyed":
                    seen[v.id] = v
        out = machine_changes(self._machines, seen, now)
        self._machines = seen
        return out


def machine_changes(before: dict[str, MachineView], after: dict[str, MachineView],
                    now: float) -> list[MachineEvent]:
    """The machine events between two listings (Fly's timestamps where it gives them)."""
    out: list[MachineEvent] = []
    for mid, v in after.items():
        old = before.get(mid)
        if old is None:
            out.append(_mevent(v, "created", v.created_at or now))
        if v.started_at is not None and (old is None or old.started_at != v.started_at):
            out.append(_mevent(v, "started", v.started_at))
    for mid, v in before.items():
        if mid not in after:
            out.append(_mevent(v, "gone", now))
    return out


def _mevent(v: MachineView, event: str, t: float) -> MachineEvent:
    return MachineEvent(t, event, v.id, v.app, pool=v.pool, size=v.size, memory_mb=v.memory_mb)


def _enqueue_of(queue: str, raw: Any, now: float) -> EnqueueEvent | None:
    try:
        body = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("message_id"), str):
        return None
    raw_options = body.get("options")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    stamp = options.get("enqueued_at")
    t = stamp / 1e3 if isinstance(stamp, int | float) else now
    machine = options.get("fly_machine")
    return EnqueueEvent(t, queue, body["message_id"],
                        dict(machine) if isinstance(machine, dict) else {})


def recorder_for(settings: Settings, redis: aioredis.Redis, fly: AsyncFlyClient | None,
                 out: Path | None = None) -> TraceRecorder:
    """A recorder writing to ``out`` (one file), or to ``[record] path`` with its rotation."""
    def header(now: float) -> Header:
        return Header(now, source="record", scaler_id=settings.scaler.id)

    rec = settings.record
    writer = (TraceWriter(out, header) if out is not None else
              TraceWriter(rec.path, header, rotate_every=rec.rotate_every, keep=rec.keep))
    return TraceRecorder(settings, redis, writer, fly=fly, list_interval=rec.list_interval)
