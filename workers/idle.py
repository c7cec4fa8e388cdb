"""An idle worker of a pool with a suspended tier (``warm_suspended``): rest, paused, to be
suspended, instead of exiting at once.

Suspending a machine freezes its memory; a dramatiq worker frozen with a message prefetched would
hold it until resumed, and dramatiq's maintenance would meanwhile hand it to another worker (run
twice). So the worker first pauses its consumers and threads (it takes no message), then marks
itself idle in ``{prefix}:idle`` (machine id -> ms), which the scaler reads: it suspends idle
workers the pool does not need, up to ``warm_suspended``. The resting worker polls its queues;
when work is ready (after a resume, or because demand came back before any suspend) it takes its
mark back and consumes again. Marking itself idle wakes the scaler, so the suspend comes within
a tick. When no suspend came within ``idle_timeout`` it exits as any idle
worker does, and its machine stops.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from workers.runtime import RunnerSettings, Stop, log, now_ms

__all__ = ["POLL_S", "rest_idle"]

POLL_S = 0.1
"""How often a resting worker looks at its queues."""


def rest_idle(
    worker: Any,
    client: Any,
    settings: RunnerSettings,
    queues: Iterable[str],
    stop: Stop,
    busy: Callable[[], bool],
) -> bool:
    """Pause ``worker``, mark it idle, and wait for work. True: work is ready, the worker consumes
    again; False: exit (nothing came within ``idle_timeout``, a signal, or no mark could be
    written)."""
    from scaler.jobs.keys import idle_workers_key, wake_channel

    queues = list(queues)
    worker.pause()
    if busy():  # a message was taken while pausing: not idle after all
        worker.resume()
        return True
    key = idle_workers_key(settings.prefix)
    ready = [f"{settings.namespace}:{q}" for q in queues]
    try:
        client.hset(key, settings.machine_id, now_ms())
    except Exception as exc:
        log.warning("cannot mark this worker idle (%s); exiting", exc)
        return False
    if queues:  # the scaler ticks now instead of at its next resync
        with contextlib.suppress(Exception):
            client.publish(wake_channel(settings.prefix), queues[0])
    log.info("idle: paused, may be suspended")
    began = time.monotonic()
    try:
        while not stop.event.wait(POLL_S):
            # Work first: after a resume the clock has jumped, and the work is why we were resumed.
            try:
                work = any(client.llen(k) for k in ready)
            except Exception as exc:  # a connection dropped while suspended: the next call retries
                log.info("queues unreadable while resting (%s)", exc)
                work = False
            if work:
                log.info("work ready: consuming again")
                worker.resume()
                return True
            if time.monotonic() - began >= settings.idle_timeout:
                return False
        return False
    finally:
        with contextlib.suppress(Exception):
            client.hdel(key, settings.machine_id)
