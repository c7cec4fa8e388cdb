"""What both modes of the runner share (:mod:`workers.runner`): its settings, its set-up error and
exit codes, the app's broker, the stop signal and a periodic beat. Light to import: dramatiq is
imported only when the broker is loaded."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SETUP",
    "RunnerSettings",
    "SetupError",
    "Stop",
    "every",
    "exit_process",
    "load_broker",
    "now_ms",
]

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
    suspend_idle: bool = False
    """Drain mode of a pool with a suspended tier: when idle, pause and wait to be suspended
    (:mod:`workers.idle`) before exiting."""
    slot: bool = False
    """Bound mode on a warm slot (``FLY_SCALER_SLOT=1``, no job in the env): the job is the one
    bound to this machine id in Redis."""


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


def now_ms() -> int:
    """Now, in ms since the epoch (the unit of every time in Redis)."""
    return int(time.time() * 1000)


class Stop:
    """Set by SIGTERM/SIGINT; remembers which signal."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0

    def install(self) -> None:
        """Make SIGTERM and SIGINT set :attr:`event`."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.signum = signum
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def every(interval: float, stop: threading.Event, beat: Callable[[], None]) -> threading.Thread:
    """Call ``beat`` every ``interval`` seconds on a daemon thread until ``stop`` is set; a beat
    that raises is logged and tried again at the next interval."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                beat()
            except Exception as exc:  # a missed beat is retried on the next interval
                log.warning("heartbeat failed: %s", type(exc).__name__)

    thread = threading.Thread(target=loop, name="fly-scaler-heartbeat", daemon=True)
    thread.start()
    return thread


def exit_process(code: int) -> None:
    """End the process with ``code`` as Python's own exit would, minus its teardown.

    A per-job machine holds its cap slot until it is gone, so the runner's exit is on every job's
    critical path. Python's exit joins non-daemon threads, runs the ``atexit`` hooks, flushes
    stdio, then tears every module and object down; that teardown is a good part of a bound
    runner's exit, and on a host running many machines it is paid while the next jobs boot.
    Python does not promise to finalize objects still alive at exit, so skipping the teardown
    takes nothing an app may rely on; the hooks (logging's flush, an error reporter's) still run.
    With a non-daemon thread still alive (an executor the job left open) the normal exit is
    taken, which joins it.
    """
    main = threading.main_thread()
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # Python's exit runs the same hooks at this point
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(code)
