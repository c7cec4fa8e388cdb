"""What runs inside a machine: ``python -m workers.runner``.

Two modes:

- **bound** (default when ``FLY_SCALER_MESSAGE`` is set): run exactly the one message the scaler
  claimed for this machine, with dramatiq's own semantics (the broker's middleware: retries with
  backoff, time limit, age limit, callbacks, pipelines, results), then exit. The message is read
  from ``{ns}:{q}.msgs`` and fed to a real dramatiq ``Worker`` through a consumer that yields
  only it; the queue list is never popped. Ack drops the body and ends the claim in one script;
  nack moves the body to ``{q}.XQ`` and ends the claim. On a warm slot (a machine created ahead,
  whose env names no message but sets ``FLY_SCALER_SLOT=1``) the job is the one the scaler bound
  to ``FLY_MACHINE_ID`` in Redis (:mod:`scaler.jobs.slots`); with no binding the runner exits 0
  at once. A machine with neither its job nor ``FLY_SCALER_SLOT=1`` in its env exits 2.
- **drain** (``--drain`` or ``FLY_SCALER_MODE=drain``): an ordinary dramatiq worker on the given
  queues that exits 0 after ``--idle-timeout`` seconds with nothing to do, but not before it has
  run ``--min-lifetime`` seconds (``FLY_SCALER_MIN_LIFETIME``).

Env (set by the scaler, see ``scaler.jobs.claims.binding_env``): ``FLY_SCALER_QUEUE``,
``FLY_SCALER_MESSAGE``, ``FLY_SCALER_NAMESPACE``, ``FLY_SCALER_PREFIX``, ``FLY_SCALER_LAUNCH``;
on a warm slot ``FLY_SCALER_SLOT=1`` instead of the job (``scaler.jobs.claim_record.slot_env``);
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

Bound mode is :mod:`workers.bound`, drain mode :mod:`workers.drain`, and what both share (the
settings, the broker, the stop signal) :mod:`workers.runtime`. Start-up is kept lean: dramatiq,
redis and ``scaler.jobs.runner_claim`` are imported only once needed.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from scaler.jobs.claim_record import SLOT_ENV
from workers.bound import run_bound
from workers.drain import run_drain
from workers.runtime import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SETUP,
    RunnerSettings,
    SetupError,
    Stop,
    exit_process,
)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_SETUP", "SetupError", "build_parser", "main"]


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
    # A machine named by its job (queue and message) runs that job; only one that says it is a
    # warm slot looks its job up by machine id. Anything else is a per-job machine whose binding
    # env is broken: exiting 0 as an idle slot would hide that, so it is a set-up error.
    slot = not drain and not message and env.get(SLOT_ENV, "") == "1"
    if not drain and not slot and not (queue and message):
        missing = [n for n, v in (("FLY_SCALER_QUEUE", queue), ("FLY_SCALER_MESSAGE", message))
                   if not v]
        raise SetupError(
            f"bound mode: {' and '.join(missing)} not set. A per-job machine gets"
            " FLY_SCALER_QUEUE and FLY_SCALER_MESSAGE from the scaler (a pool's env must not"
            " replace them); a warm slot gets FLY_SCALER_SLOT=1. Use --drain to run as an"
            " ordinary worker"
        )
    if slot and not env.get("FLY_MACHINE_ID"):
        raise SetupError("FLY_SCALER_SLOT=1 but FLY_MACHINE_ID is not set: a warm slot finds its"
                         " job by the machine id Fly gives it")
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
        suspend_idle=drain and env.get("FLY_SCALER_SUSPEND_IDLE", "") == "1",
        slot=slot,
    )


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
    stop = Stop()
    stop.install()
    try:
        settings = resolve(args, dict(os.environ))
        return run_drain(settings, stop) if settings.drain else run_bound(settings, stop)
    except SetupError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":
    exit_process(main())
