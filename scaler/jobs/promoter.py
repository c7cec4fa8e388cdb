"""The embedded promoter: keeps delayed work and dead workers' messages moving at zero workers.

dramatiq only moves a delayed message (``{ns}:{q}.DQ``, retries included) to its queue from
inside a running worker, and only requeues the messages of a dead worker when some dispatch on
that exact queue rolls its 0.1% maintenance chance. With scale-to-zero neither happens, so the
scaler process runs this promoter:

- a real dramatiq ``Worker`` on a broker of its own (the app's namespace), with
  ``queue_prefetch = 0`` (it never takes ready work) and a large ``delay_prefetch``: its delay
  consumers hold every delayed message and enqueue it on ``{q}`` at its eta, with dramatiq's own
  logic (same ``message_id``, a new ``redis_message_id``). No worker threads run: nothing is
  ever executed here, and the app's actors module is not needed. A delayed message whose ``eta``
  is missing or ``None`` would make dramatiq look its actor up and dead-letter it when unknown;
  the promoter treats it as due now instead, so a message is never dead-lettered for lacking
  its actor here.
- forced maintenance every ``maintenance_interval_s`` for each ``q`` and ``q.DQ`` (a dispatch
  call with an unknown command and ``do_maintenance=1``), which requeues the messages held by
  workers whose heartbeat is older than dramatiq's heartbeat timeout (60 s).

Promotions go through :class:`workers.enqueue.ScalerMiddleware`, so they stamp ``enqueued_at``
and publish a wake-up like any enqueue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

from scaler.jobs.enqueue import ScalerMiddleware
from scaler.secret import Secret, reveal

__all__ = ["MAINTENANCE_BROKER_ID", "Promoter"]

log = logging.getLogger(__name__)

#: The id our forced maintenance calls run under: it never owns acks, so it is never "dead".
MAINTENANCE_BROKER_ID = "fly-scaler-maintenance"


class _DueNowConsumer:
    """Wraps a delay-queue consumer so that every message it yields carries a numeric eta."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        message = next(self._inner)
        if message is not None and not isinstance(message.options.get("eta"), int | float):
            message.options["eta"] = current_millis()
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Promoter:
    """Promotes due delayed messages and forces maintenance, in background threads.

    ``start()`` is idempotent; ``stop()`` puts held delayed messages back on ``q.DQ`` (dramatiq's
    own shutdown) and joins every thread it started.
    """

    def __init__(
        self,
        redis_url: str | Secret,
        namespace: str,
        queues: Sequence[str],
        maintenance_interval_s: float = 30,
        *,
        prefix: str = "fly-scaler",
        poll_ms: int = 500,
    ) -> None:
        if maintenance_interval_s <= 0:
            raise ValueError(
                f"maintenance_interval_s: must be > 0 seconds, got {maintenance_interval_s}"
            )
        self.namespace = namespace
        self.queues = tuple(dict.fromkeys(queues))
        self.maintenance_interval_s = maintenance_interval_s
        self.broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=reveal(redis_url), namespace=namespace, middleware=[]
        )
        self.broker.add_middleware(ScalerMiddleware(prefix=prefix))
        self._poll_ms = poll_ms
        self._worker: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        #: Set after each maintenance pass (tests and health checks wait on it).
        self.maintained = threading.Event()
        self.maintenance_passes = 0

    def __repr__(self) -> str:
        return f"Promoter(namespace={self.namespace!r}, queues={list(self.queues)!r})"

    def start(self) -> None:
        """Start promoting and maintaining."""
        if self._worker is not None:
            return
        broker: Any = self.broker
        real_consume = broker.consume

        def consume(queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
            consumer = real_consume(queue_name, prefetch=prefetch, timeout=timeout)
            return _DueNowConsumer(consumer) if queue_name.endswith(".DQ") else consumer

        broker.consume = consume
        for q in self.queues:
            broker.declare_queue(q)
        worker = Worker(
            broker, queues=set(self.queues), worker_threads=0, worker_timeout=self._poll_ms
        )
        worker.queue_prefetch = 0  # never fetch ready work: `outstanding < 0` is always false
        worker.delay_prefetch = 65535
        self._stopping.clear()
        worker.start()
        self._worker = worker
        self._thread = threading.Thread(
            target=self._maintenance_loop, name="fly-scaler-maintenance", daemon=True
        )
        self._thread.start()
        log.info("promoter started for %d queues", len(self.queues))

    def stop(self, timeout_s: float = 10) -> None:
        """Stop every thread; held delayed messages go back to their ``q.DQ``."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._worker is not None:
            self._worker.stop(timeout=int(timeout_s * 1000))
            self._worker = None
        self.broker.client.close()

    def maintain_now(self, queues: Iterable[str] | None = None) -> None:
        """Force dramatiq's maintenance on each queue and its delay queue, once."""
        broker: Any = self.broker
        dispatch = broker.scripts["dispatch"]
        for q in self.queues if queues is None else queues:
            for name in (q, dq_name(q)):
                dispatch(
                    keys=[self.namespace],
                    args=[
                        "fly-scaler-maintenance",  # an unknown command: maintenance only
                        current_millis(),
                        name,
                        MAINTENANCE_BROKER_ID,
                        broker.heartbeat_timeout,
                        broker.dead_message_ttl,
                        1,
                        broker._max_unpack_size(),
                    ],
                )
        self.maintenance_passes += 1
        self.maintained.set()

    def _maintenance_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.maintain_now()
            except Exception as exc:  # Redis down: try again next interval
                log.warning("forced maintenance failed: %s", type(exc).__name__)
            if self._stopping.wait(self.maintenance_interval_s):
                return
