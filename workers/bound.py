"""The runner's bound mode (:mod:`workers.runner`): run the one message the scaler claimed for
this machine through a real dramatiq ``Worker``, end its claim with the outcome, or, when it
cannot be run at all, dead-letter it at once with the set-up reason."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from workers.runtime import (
    EXIT_FAILED,
    EXIT_OK,
    RunnerSettings,
    SetupError,
    Stop,
    every,
    load_broker,
    log,
    now_ms,
)

if TYPE_CHECKING:
    from scaler.jobs.runner_claim import FinishOutcome, RunnerClaim

__all__ = ["REDIS_START_RETRY_S", "run_bound"]

class _BoundConsumer:
    """A dramatiq consumer that yields one message, then nothing; ack/nack end the claim and
    record how the job ended."""

    def __init__(
        self, message: Any, claim: RunnerClaim, state: _BoundState, machine_id: str
    ) -> None:
        self._pending = [message]
        self._claim = claim
        self._state = state
        self._machine_id = machine_id

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._pending:
            return self._pending.pop()
        time.sleep(0.02)  # the consumer thread polls; cheap, and quick to stop
        return None

    def ack(self, message: Any) -> None:
        if not self._state.abandoned:
            self._end("ack", message)

    def nack(self, message: Any) -> None:
        if not self._state.abandoned:
            self._end("nack", message)

    def _end(self, outcome: FinishOutcome, message: Any) -> None:
        self._claim.finish(
            outcome, now_ms(), machine_id=self._machine_id, error=self._state.error,
            message_id=message.message_id, actor=message.actor_name,
        )

    def requeue(self, messages: Any) -> None:
        """Nothing to do: an unstarted bound message simply stays claimed."""

    def close(self) -> None:
        """Nothing to close."""


class _IdleConsumer(_BoundConsumer):
    """The consumer of every other queue (including the delay queue): never yields."""

    def __init__(self, state: _BoundState) -> None:
        self._pending = []
        self._state = state
        self._machine_id = ""


class _BoundState:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.abandoned = False
        self.acked = False
        self.error: str | None = None


def _outcome_middleware(message_id: str, state: _BoundState) -> Any:
    import dramatiq

    class Outcome(dramatiq.Middleware):
        def after_process_message(
            self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
        ) -> None:
            if message.message_id == message_id and exception is not None:
                state.error = f"{type(exception).__name__}: {exception}"

        def after_skip_message(self, broker: Any, message: Any) -> None:
            if message.message_id == message_id and message.failed:
                state.error = ("skipped: failed by a middleware before it ran (dramatiq's AgeLimit"
                               " does so past its max_age)")

        def after_ack(self, broker: Any, message: Any) -> None:
            if message.message_id == message_id:
                state.acked = True
                state.done.set()

        def after_nack(self, broker: Any, message: Any) -> None:
            if message.message_id == message_id:
                state.done.set()

    return Outcome()


REDIS_START_RETRY_S = 60.0


def _retry_redis(call: Callable[[], bool], stop: Stop) -> bool:
    """``call()``, tried again while Redis cannot be reached, for up to ``REDIS_START_RETRY_S``
    (a machine that boots during a Redis blip must not spend one of its job's launches)."""
    import redis.exceptions

    deadline = time.monotonic() + REDIS_START_RETRY_S
    delay = 0.2
    while True:
        try:
            return call()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if time.monotonic() + delay > deadline or stop.event.is_set():
                raise
            print(f"runner: Redis unreachable ({exc}); trying again in {delay:.1f}s")
            stop.event.wait(delay)
            delay = min(delay * 2, 5.0)


def run_bound(settings: RunnerSettings, stop: Stop) -> int:
    """Run the one claimed message; see the module docstring for exit codes."""
    from dramatiq import Worker
    from dramatiq.broker import MessageProxy

    from scaler.jobs.runner_claim import RunnerClaim

    try:
        broker = load_broker(settings.actors, settings.namespace)
    except SetupError as exc:
        if settings.message:
            _abort_without_broker(settings, str(exc))
        raise
    if settings.slot:
        slot = _slot_settings(broker, settings, stop)
        if slot is None:
            print(f"runner: no job bound to slot {settings.machine_id}; nothing to run")
            return EXIT_OK
        settings = slot
    q, rmid = settings.queue, settings.message
    claim = RunnerClaim(
        broker.client,
        namespace=settings.namespace,
        prefix=settings.prefix,
        queue=q,
        redis_message_id=rmid,
        launch=settings.launch,
    )
    if not _retry_redis(lambda: claim.mark_running(settings.machine_id, now_ms()), stop):
        print(f"runner: claim {q}/{rmid} is gone or owned by another machine; not running it")
        return EXIT_OK
    try:
        message = _bound_message(broker, settings)
    except SetupError as exc:
        _abort(claim, settings, str(exc))
        raise

    state = _BoundState()
    proxy = MessageProxy(message)

    def consume(queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _BoundConsumer:
        if queue_name == q:
            return _BoundConsumer(proxy, claim, state, settings.machine_id)
        return _IdleConsumer(state)

    broker.consume = consume  # every consumer of this Worker reads from us, not from Redis
    broker.add_middleware(_outcome_middleware(message.message_id, state))
    broker.emit_after("process_boot")  # TimeLimit starts its timer thread here
    # Short polls: once the job is acked the machine should be gone fast (its cap slot is
    # waiting); a 20 ms poll costs nothing in a one-job process.
    worker = Worker(broker, queues={q}, worker_threads=1, worker_timeout=20)
    worker.queue_prefetch = 1
    worker.delay_prefetch = 1
    beat_stop = threading.Event()
    worker.start()
    every(
        settings.heartbeat_interval,
        beat_stop,
        lambda: _warn_unless(claim.heartbeat(settings.machine_id, now_ms()), "claim lost"),
    )
    try:
        while not state.done.wait(0.02) and not stop.event.is_set():
            pass
    finally:
        beat_stop.set()
        if not state.done.is_set():
            state.abandoned = True  # leave the message claimed: the scaler gives it back
        else:
            # The job is acked and its claim ended: nothing is left for a thread to finish, so
            # every thread is told at once and their polls end together, not one after another
            # as dramatiq's stop does (workers first, to let consumers heartbeat meanwhile).
            for worker_thread in worker.workers:
                worker_thread.stop()
            for consumer_thread in worker.consumers.values():
                consumer_thread.stop()
        worker.stop(timeout=1000 if state.abandoned else int(settings.shutdown_timeout * 1000))
    if state.abandoned:
        print(f"runner: stopped by signal {stop.signum}; {q}/{rmid} left claimed", file=sys.stderr)
        return 128 + stop.signum
    if state.acked and state.error is None:
        return EXIT_OK
    print(f"runner: job {message.message_id} failed: {state.error or 'rejected'}", file=sys.stderr)
    return EXIT_FAILED


def _slot_settings(broker: Any, settings: RunnerSettings, stop: Stop) -> RunnerSettings | None:
    """On a warm slot: the settings of the job bound to this machine, or ``None``."""
    from dataclasses import replace

    from scaler.jobs.slots import SlotBinding, read_binding

    found: list[SlotBinding | None] = []

    def read() -> bool:
        found.append(read_binding(broker.client, settings.prefix, settings.machine_id))
        return True

    _retry_redis(read, stop)
    binding = found[-1]
    if binding is None:
        return None
    return replace(settings, queue=binding.queue, message=binding.job, launch=binding.launch)


def _bound_message(broker: Any, settings: RunnerSettings) -> Any:
    """The claimed message, decoded and checked against the queue and the declared actors."""
    import dramatiq

    q, rmid = settings.queue, settings.message
    body = broker.client.hget(f"{settings.namespace}:{q}.msgs", rmid)
    if body is None:
        raise SetupError(f"message {rmid} is not in {settings.namespace}:{q}.msgs")
    try:
        message = dramatiq.Message.decode(body)
    except Exception as exc:
        raise SetupError(f"message {rmid} cannot be decoded: {type(exc).__name__}") from exc
    if message.queue_name != q:
        raise SetupError(f"message {rmid} belongs to queue {message.queue_name!r}, not {q!r}")
    if message.actor_name not in broker.actors:
        raise SetupError(
            f"actor {message.actor_name!r} is not declared by {settings.actors!r};"
            " the image must import every actor of the queues it runs"
        )
    return message


def _abort(claim: RunnerClaim, settings: RunnerSettings, reason: str) -> None:
    """Dead-letter the claimed message at once with the set-up failure's ``reason`` (best
    effort: when Redis cannot be reached the scaler relaunches the job, as after a crash)."""
    import redis.exceptions

    try:
        aborted = claim.abort(settings.machine_id, reason, now_ms())
    except redis.exceptions.RedisError as exc:
        print(f"runner: set-up failure not recorded ({type(exc).__name__})", file=sys.stderr)
        return
    if aborted:
        print(f"runner: {settings.queue}/{settings.message} dead-lettered: {reason}",
              file=sys.stderr)


def _abort_without_broker(settings: RunnerSettings, reason: str) -> None:
    """:func:`_abort` when the actors module gave no broker: through ``REDIS_URL``, if set."""
    if not settings.redis_url:
        print("runner: REDIS_URL is not set, so the set-up failure is not recorded; the scaler"
              " relaunches the job until max_launches", file=sys.stderr)
        return
    import redis

    from scaler.jobs.runner_claim import RunnerClaim

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        _abort(RunnerClaim(client, namespace=settings.namespace, prefix=settings.prefix,
                           queue=settings.queue, redis_message_id=settings.message,
                           launch=settings.launch), settings, reason)
    finally:
        client.close()


def _warn_unless(ok: bool, what: str) -> None:
    if not ok:
        log.warning("heartbeat: %s", what)
