"""The runner's drain mode (:mod:`workers.runner`): an ordinary dramatiq worker on its queues
that exits once idle (after its minimum lifetime); in a pool with a suspended tier it first rests
paused, to be suspended (:mod:`workers.idle`)."""

from __future__ import annotations

import threading
import time
from typing import Any

from workers.idle import rest_idle
from workers.runtime import EXIT_OK, RunnerSettings, Stop, every, load_broker, log, now_ms

__all__ = ["run_drain"]

class _Activity:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.last = time.monotonic()

    def middleware(self) -> Any:
        import dramatiq

        activity = self

        class Activity(dramatiq.Middleware):
            def before_process_message(self, broker: Any, message: Any) -> None:
                with activity.lock:
                    activity.running += 1
                    activity.last = time.monotonic()

            def after_process_message(
                self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
            ) -> None:
                with activity.lock:
                    activity.running -= 1
                    activity.last = time.monotonic()

            after_skip_message = after_process_message

        return Activity()


def _busy(worker: Any) -> bool:
    return bool(worker.work_queue.unfinished_tasks > 0)


def run_drain(settings: RunnerSettings, stop: Stop) -> int:
    """Consume the queues until idle for ``idle_timeout`` seconds, once the worker has run
    ``min_lifetime`` seconds (or until a signal); exit 0."""
    from dramatiq import Worker

    broker = load_broker(settings.actors, settings.namespace)
    queues = set(settings.queues) or set(broker.get_declared_queues())
    for q in queues:
        broker.declare_queue(q)
    activity = _Activity()
    broker.add_middleware(activity.middleware())
    broker.emit_after("process_boot")
    worker = Worker(broker, queues=queues, worker_threads=settings.threads, worker_timeout=200)
    worker.queue_prefetch = settings.threads
    # The scaler's promoter makes delayed messages ready; a worker that held them in memory
    # would only delay them further when it exits.
    worker.delay_prefetch = 0
    beat_stop = threading.Event()
    from scaler.jobs.keys import heartbeats_key

    heartbeats = heartbeats_key(settings.namespace)
    worker.start()
    born = time.monotonic()
    # dramatiq heart-beats only as a side effect of fetching; a worker whose threads are all busy
    # stops fetching, and after 60 s maintenance would hand its running messages to another.
    every(
        settings.heartbeat_interval,
        beat_stop,
        lambda: broker.client.zadd(heartbeats, {broker.broker_id: now_ms()}),
    )
    try:
        while not stop.event.wait(0.1):
            with activity.lock:
                busy = activity.running > 0 or worker.work_queue.unfinished_tasks > 0
                if busy:
                    activity.last = time.monotonic()
                idle_for = time.monotonic() - activity.last
            if idle_for >= settings.idle_timeout and (
                time.monotonic() - born >= settings.min_lifetime
            ):
                if settings.suspend_idle and rest_idle(
                    worker, broker.client, settings, queues, stop, busy=lambda: _busy(worker)
                ):
                    with activity.lock:
                        activity.last = time.monotonic()
                    continue
                log.info("idle for %.1fs; exiting", idle_for)
                break
    finally:
        beat_stop.set()
        worker.stop(timeout=int(settings.shutdown_timeout * 1000))
    return EXIT_OK
