"""What runs inside a machine: ``python -m workers.runner``.

Two modes:

- **bound** (default when ``FLY_SCALER_MESSAGE`` is set): run exactly the one message the scaler
  claimed for this machine, with dramatiq's own semantics (the broker's middleware: retries with
  backoff, time limit, age limit, callbacks, pipelines, results), then exit. The message is read
  from ``{ns}:{q}.msgs`` and fed to a real dramatiq ``Worker`` through a consumer that yields
  only it; the queue list is never popped. Ack drops the body and ends the claim in one script;
  nack moves the body to ``{q}.XQ`` and ends the claim.
- **drain** (``--drain`` or ``FLY_SCALER_MODE=drain``): an ordinary dramatiq worker on the given
  queues that exits 0 after ``--idle-timeout`` seconds with nothing to do, but not before it has
  run ``--min-lifetime`` seconds (``FLY_SCALER_MIN_LIFETIME``).

Env (set by the scaler, see ``scaler.jobs.claims.binding_env``): ``FLY_SCALER_QUEUE``,
``FLY_SCALER_MESSAGE``, ``FLY_SCALER_NAMESPACE``, ``FLY_SCALER_PREFIX``, ``FLY_SCALER_LAUNCH``;
the app's actors module comes from ``SCALER_ACTORS`` or ``--actors`` and must configure a
``RedisBroker`` (its namespace is forced to ``FLY_SCALER_NAMESPACE``). Drain mode reads
``FLY_SCALER_QUEUES`` (comma-separated), ``FLY_SCALER_THREADS``, ``FLY_SCALER_IDLE_TIMEOUT``.

Exit codes: 0 success (or the claim belongs to someone else: nothing was run), 1 the job failed
(a retry was scheduled or it was dead-lettered), 2 set-up error (bad module, missing message,
unknown actor), 128+signal when stopped by SIGTERM/SIGINT in bound mode (the message is left
claimed, not acked: the scaler gives it back once the machine is gone).

A set-up error in bound mode is recorded on the claim by the script that ends it
(:meth:`~scaler.jobs.runner_claim.RunnerClaim.abort`): the message is dead-lettered at once with
the reason, instead of costing a machine per launch that would fail the same way. When the actors
module itself cannot be loaded there is no broker to reach Redis with: ``REDIS_URL`` is used, and
without it nothing is recorded (the scaler relaunches the job, as after a crash).

Start-up is kept lean: dramatiq, redis and ``scaler.jobs.runner_claim`` are imported only once
needed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scaler.jobs.runner_claim import FinishOutcome, RunnerClaim

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_SETUP", "SetupError", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETUP = 2

log = logging.getLogger("workers.runner")


class SetupError(Exception):
    """The runner cannot start: the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class RunnerSettings:
    """The runner's resolved settings (command line first, then env)."""

    actors: str
    drain: bool
    queue: str
    message: str
    namespace: str
    prefix: str
    launch: int
    queues: tuple[str, ...]
    threads: int
    idle_timeout: float
    min_lifetime: float
    heartbeat_interval: float
    shutdown_timeout: float
    machine_id: str
    redis_url: str = ""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m workers.runner``."""
    p = argparse.ArgumentParser(
        prog="python -m workers.runner",
        description="Run one bound dramatiq job, or drain queues until idle.",
    )
    p.add_argument("--actors", help="the app's actors module (default: env SCALER_ACTORS)")
    p.add_argument("--drain", action="store_true", help="drain mode (or FLY_SCALER_MODE=drain)")
    p.add_argument("--queue", help="bound mode: the queue (default: env FLY_SCALER_QUEUE)")
    p.add_argument("--message", help="bound mode: redis_message_id (env FLY_SCALER_MESSAGE)")
    p.add_argument("--namespace", help="dramatiq namespace (env FLY_SCALER_NAMESPACE)")
    p.add_argument("--prefix", help="scaler key prefix (env FLY_SCALER_PREFIX)")
    p.add_argument("--queues", help="drain mode: comma-separated queues (env FLY_SCALER_QUEUES)")
    p.add_argument(
        "--threads", type=int, help="drain mode: worker threads (env FLY_SCALER_THREADS)"
    )
    p.add_argument(
        "--idle-timeout", type=float, help="drain mode: seconds idle before exiting (default 60)"
    )
    p.add_argument(
        "--min-lifetime", type=float,
        help="drain mode: never exit idle before running this many seconds (default 0)"
    )
    p.add_argument(
        "--heartbeat-interval", type=float, default=None, help="seconds between heartbeats (15)"
    )
    p.add_argument(
        "--shutdown-timeout", type=float, default=None, help="seconds to finish work on stop (600)"
    )
    p.add_argument("--path", default=".", help="prepended to sys.path (default: .)")
    return p


def _env_number(
    name: str, given: float | None, default: float, env: dict[str, str], *, zero: bool = False
) -> float:
    if given is not None:
        value = given
    else:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SetupError(f"{name}={raw!r} is not a number") from None
    if value < 0 or (value == 0 and not zero):
        raise SetupError(f"{name}: must be {'>= 0' if zero else '> 0'}, got {value}")
    return value


def resolve(args: argparse.Namespace, env: dict[str, str]) -> RunnerSettings:
    """Merge the command line with env; raise :class:`SetupError` naming what is missing."""
    actors = args.actors or env.get("SCALER_ACTORS", "")
    if not actors:
        raise SetupError("no actors module: pass --actors my_app.tasks or set SCALER_ACTORS")
    drain = args.drain or env.get("FLY_SCALER_MODE", "") == "drain"
    queue = args.queue or env.get("FLY_SCALER_QUEUE", "")
    message = args.message or env.get("FLY_SCALER_MESSAGE", "")
    if not drain and not (queue and message):
        raise SetupError(
            "bound mode needs FLY_SCALER_QUEUE and FLY_SCALER_MESSAGE (set by the scaler);"
            " use --drain to run as an ordinary worker"
        )
    raw_queues = args.queues or env.get("FLY_SCALER_QUEUES", "")
    launch_raw = env.get("FLY_SCALER_LAUNCH", "1") or "1"
    if not launch_raw.isdigit():
        raise SetupError(f"FLY_SCALER_LAUNCH={launch_raw!r} is not a positive integer")
    threads = int(_env_number("FLY_SCALER_THREADS", args.threads, 1, env))
    return RunnerSettings(
        actors=actors,
        drain=drain,
        queue=queue,
        message=message,
        namespace=args.namespace or env.get("FLY_SCALER_NAMESPACE", "") or "dramatiq",
        prefix=args.prefix or env.get("FLY_SCALER_PREFIX", "") or "fly-scaler",
        launch=int(launch_raw),
        queues=tuple(q.strip() for q in raw_queues.split(",") if q.strip()),
        threads=threads,
        idle_timeout=_env_number("FLY_SCALER_IDLE_TIMEOUT", args.idle_timeout, 60, env),
        min_lifetime=_env_number("FLY_SCALER_MIN_LIFETIME", args.min_lifetime, 0, env,
                                 zero=True),
        heartbeat_interval=_env_number(
            "FLY_SCALER_HEARTBEAT_INTERVAL", args.heartbeat_interval, 15, env
        ),
        shutdown_timeout=_env_number(
            "FLY_SCALER_SHUTDOWN_TIMEOUT", args.shutdown_timeout, 600, env
        ),
        machine_id=env.get("FLY_MACHINE_ID") or f"{socket.gethostname()}-{os.getpid()}",
        redis_url=env.get("REDIS_URL", ""),
    )


def load_broker(module: str, namespace: str) -> Any:
    """Import the actors module and return dramatiq's configured RedisBroker, in ``namespace``."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    try:
        importlib.import_module(module)
    except Exception as exc:
        raise SetupError(
            f"cannot import actors module {module!r}: {type(exc).__name__}: {exc}"
        ) from exc
    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        raise SetupError(
            f"actors module {module!r} configured a {type(broker).__name__}; fly-scaler needs a"
            " RedisBroker: call dramatiq.set_broker(RedisBroker(url=...)) in that module"
        )
    if broker.namespace != namespace:
        log.warning("using dramatiq namespace %r instead of %r", namespace, broker.namespace)
        broker.namespace = namespace
    return broker


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Stop:
    """Set by SIGTERM/SIGINT; remembers which signal."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.signum = signum
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _every(interval: float, stop: threading.Event, beat: Callable[[], None]) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(interval):
            try:
                beat()
            except Exception as exc:  # a missed beat is retried on the next interval
                log.warning("heartbeat failed: %s", type(exc).__name__)

    thread = threading.Thread(target=loop, name="fly-scaler-heartbeat", daemon=True)
    thread.start()
    return thread


# --- bound mode ------------------------------------------------------------------------------


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
            outcome, _now_ms(), machine_id=self._machine_id, error=self._state.error,
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


def _retry_redis(call: Callable[[], bool], stop: _Stop) -> bool:
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


def run_bound(settings: RunnerSettings, stop: _Stop) -> int:
    """Run the one claimed message; see the module docstring for exit codes."""
    from dramatiq import Worker
    from dramatiq.broker import MessageProxy

    from scaler.jobs.runner_claim import RunnerClaim

    q, rmid = settings.queue, settings.message
    try:
        broker = load_broker(settings.actors, settings.namespace)
    except SetupError as exc:
        _abort_without_broker(settings, str(exc))
        raise
    claim = RunnerClaim(
        broker.client,
        namespace=settings.namespace,
        prefix=settings.prefix,
        queue=q,
        redis_message_id=rmid,
        launch=settings.launch,
    )
    if not _retry_redis(lambda: claim.mark_running(settings.machine_id, _now_ms()), stop):
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
    _every(
        settings.heartbeat_interval,
        beat_stop,
        lambda: _warn_unless(claim.heartbeat(settings.machine_id, _now_ms()), "claim lost"),
    )
    try:
        while not state.done.wait(0.02) and not stop.event.is_set():
            pass
    finally:
        beat_stop.set()
        if not state.done.is_set():
            state.abandoned = True  # leave the message claimed: the scaler gives it back
        worker.stop(timeout=1000 if state.abandoned else int(settings.shutdown_timeout * 1000))
    if state.abandoned:
        print(f"runner: stopped by signal {stop.signum}; {q}/{rmid} left claimed", file=sys.stderr)
        return 128 + stop.signum
    if state.acked and state.error is None:
        return EXIT_OK
    print(f"runner: job {message.message_id} failed: {state.error or 'rejected'}", file=sys.stderr)
    return EXIT_FAILED


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
        aborted = claim.abort(settings.machine_id, reason, _now_ms())
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


# --- drain mode ------------------------------------------------------------------------------


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


def run_drain(settings: RunnerSettings, stop: _Stop) -> int:
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
    _every(
        settings.heartbeat_interval,
        beat_stop,
        lambda: broker.client.zadd(heartbeats, {broker.broker_id: _now_ms()}),
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
                log.info("idle for %.1fs; exiting", idle_for)
                break
    finally:
        beat_stop.set()
        worker.stop(timeout=int(settings.shutdown_timeout * 1000))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.path and args.path not in sys.path:
        sys.path.insert(0, os.path.abspath(args.path))
    stop = _Stop()
    stop.install()
    try:
        settings = resolve(args, dict(os.environ))
        return run_drain(settings, stop) if settings.drain else run_bound(settings, stop)
    except SetupError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
