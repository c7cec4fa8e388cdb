"""``scaler record``: write what a running scaler observes into a trace (docs/replay.md).

It reads the scaler's Redis and lists the pools' apps on Fly; it never changes anything. Without
``--out`` it records as ``[record]`` says (its path, rotated every ``rotate_every``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import redis.asyncio as aioredis

from scaler.commands.common import add_config_argument, load_or_report
from scaler.config import Settings
from scaler.durations import DURATION_HELP, parse_duration
from scaler.fly.client import AsyncFlyClient
from scaler.loop.governor import make_governor
from scaler.replay.recorder import recorder_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--duration``, ``--no-machines``."""
    add_config_argument(parser)
    parser.add_argument("--out", type=Path, metavar="PATH",
                        help="the trace file (default: [record] path, rotated)")
    parser.add_argument("--duration", metavar="DURATION",
                        help=f"stop after this long ({DURATION_HELP}); default: until Ctrl-C")
    parser.add_argument("--no-machines", action="store_true",
                        help="do not list machines on Fly (enqueues and job ends only)")


async def _record(settings: Settings, out: Path | None, duration: float | None,
                  machines: bool) -> int:
    redis = aioredis.Redis.from_url(settings.redis.url.get_secret_value(),
                                    socket_timeout=5.0, socket_connect_timeout=5.0)
    fly = None
    if machines and settings.fly.token:
        governor = make_governor(settings.scaler.shared_rate_limits, redis,
                                 settings.redis.prefix)
        fly = AsyncFlyClient(settings.fly.token, base_url=settings.fly.api_url,
                             timeout=settings.fly.timeout, governor=governor)
    recorder = recorder_for(settings, redis, fly, out)
    stop = asyncio.Event()
    try:
        await recorder.run(stop, duration)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        recorder.writer.close()
        if fly is not None:
            await fly.aclose()
        await redis.aclose()
    print(f"recorded {recorder.writer.lines} events to {recorder.writer.path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Record until ``--duration`` or Ctrl-C; 2 on a bad config or duration."""
    settings = load_or_report(args, "record")
    if settings is None:
        return 2
    duration = None
    if args.duration is not None:
        try:
            duration = parse_duration(args.duration)
        except ValueError as exc:
            print(f"scaler record: --duration {args.duration!r}: {exc}", file=sys.stderr)
            return 2
    if not args.no_machines and not settings.fly.token:
        print("scaler record: no Fly token (FLY_API_TOKEN): recording without machine events",
              file=sys.stderr)
    try:
        return asyncio.run(_record(settings, args.out, duration, not args.no_machines))
    except KeyboardInterrupt:
        return 0
