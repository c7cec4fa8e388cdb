"""``scaler dev``: the whole system on this machine, with a live terminal view.

One command starts a Redis (the one at ``REDIS_URL`` if it answers, else a private
``redis-server``), the local Machines API running machines as local processes, the scaler with an
example config (a per-job pool on queue ``jobs``, a scale-to-zero worker pool on queue
``default``) and an example app that enqueues a stream of jobs of both kinds. Everything it writes
to Redis lives under a fresh ``dev-<id>:`` namespace and is deleted at exit; every machine and
process it started is stopped. No Fly account is needed.

Usage::

    scaler dev                                   # endless stream, live view; Ctrl-C to stop
    scaler dev --jobs 20 --exit-when-done        # run 20 jobs, prove each ran once, exit 0/1
    scaler dev --timings realistic --rate 2      # Fly-like boot times, 2 jobs/s
    scaler dev --redis-url redis://host:6379/0   # use that Redis (it must answer)
    scaler dev --github --jobs 10                # GitHub Actions runners against a local GitHub

With ``--github`` (see :mod:`scaler.dev.github`) a local GitHub stand-in takes the example app's
place: it queues N workflow jobs and sends their signed webhooks to the scaler, whose github pool
gives each an ephemeral runner machine; one webhook is lost on purpose, so the resync is proven
too. The run always ends when the jobs are done and checks each job got exactly one machine and
nothing is left.

Exit codes: 0 done (with ``--exit-when-done``: every job ran exactly once and no machine was left
running), 1 the run failed (the summary says why), 2 bad options or no Redis, 130 interrupted
before ``--exit-when-done`` was done.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

__all__ = ["add_arguments", "run"]

N = TypeVar("N", int, float)


def _number(kind: Callable[[str], N], noun: str, *, above_zero: bool) -> Callable[[str], N]:
    """An argparse type: ``kind(text)``, above 0 or at least 0, with an error naming the rule."""

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if value < 0 or (above_zero and value == 0):
            rule = "above 0" if above_zero else "0 or more"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


_positive_float = _number(float, "a number", above_zero=True)
_non_negative_float = _number(float, "a number", above_zero=False)
_count = _number(int, "a whole number", above_zero=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scaler dev``."""
    parser.add_argument("--jobs", type=_count, metavar="N",
                        help="send N example jobs (half per-job, half worker pool), then stop "
                        "sending (default: an endless stream)")
    parser.add_argument("--exit-when-done", action="store_true",
                        help="with --jobs: exit once every job ran and the machines drained; "
                        "exit 0 only if each job ran exactly once and no machine is left")
    parser.add_argument("--timeout", type=_positive_float, default=120.0, metavar="S",
                        help="with --exit-when-done: give up after S seconds (default 120)")
    parser.add_argument("--timings", choices=("fast", "realistic"), default="fast",
                        help="machine boot/stop times of the local Machines API (default fast)")
    parser.add_argument("--redis-url", metavar="URL",
                        help="use this Redis (it must answer); default: REDIS_URL if it "
                        "answers, else an embedded redis-server")
    parser.add_argument("--embedded-redis", action="store_true",
                        help="always start a private redis-server")
    parser.add_argument("--no-view", action="store_true",
                        help="no live view or progress lines: only the start lines and summary")
    parser.add_argument("--rate", type=_positive_float, default=1.5, metavar="JOBS_PER_S",
                        help="jobs sent per second (default 1.5; above ~2/s the per-job "
                        "pool outruns Fly's create rate limit of 1/s per app and a backlog "
                        "grows)")
    parser.add_argument("--github", action="store_true",
                        help="GitHub Actions runners: a local GitHub stand-in queues --jobs N "
                        "workflow jobs and webhooks them to a github pool; exit 0 only if each "
                        "job got exactly one runner machine and nothing is left")
    parser.add_argument("--run-time", type=_non_negative_float, default=0.5, metavar="S",
                        help="with --github: seconds each workflow job runs (default 0.5)")
    parser.add_argument("--namespace", metavar="NAME",
                        help="Redis namespace of this run (default dev-<random>); every key "
                        "under NAME: is deleted at exit")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``scaler dev``."""
    from scaler.dev.session import DevOptions, run_dev

    options = DevOptions(
        jobs=args.jobs,
        exit_when_done=args.exit_when_done,
        timeout=args.timeout,
        timings=args.timings,
        redis_url=args.redis_url,
        embedded_redis=args.embedded_redis,
        view=False if args.no_view else None,
        rate=args.rate,
        namespace=args.namespace,
        github=getattr(args, "github", False),
        run_time=getattr(args, "run_time", 0.5),
    )
    return run_dev(options)
