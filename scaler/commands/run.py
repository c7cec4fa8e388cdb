"""``scaler run -c scaler.toml``: run the scheduler until SIGTERM/SIGINT.

A bad config refuses to start (exit 2) with every problem listed. SIGTERM or SIGINT lets the tick
in progress finish, waits for calls still running (bounded), releases the leader lease and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog

from scaler.config import ConfigError, Settings, default_config_path, load_settings
from scaler.config.readiness import missing_token, warnings
from scaler.telemetry.logging import configure_logging

__all__ = ["add_arguments", "run"]

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scaler run``."""
    parser.add_argument("-c", "--config", help="config file (default $SCALER_CONFIG or "
                        "./scaler.toml)")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-format", choices=("json", "console", "auto"), default="auto",
                        help="JSON lines (production), console (a terminal), or auto")


async def _main(settings: Settings) -> int:
    from scaler.loop.service import Service

    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.run(stop)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``scaler run``."""
    fmt = {"json": True, "console": False, "auto": None}[args.log_format]
    configure_logging(json=fmt, level=args.log_level)
    path = args.config or default_config_path()
    try:
        settings = load_settings(str(path) if path else None)
    except ConfigError as exc:
        print(f"scaler run: the config is not valid, not starting:\n{exc}", file=sys.stderr)
        return 2
    no_token = missing_token(settings)
    if no_token is not None:
        print(f"scaler run: not starting: {no_token}", file=sys.stderr)
        return 2
    for line in warnings(settings):
        log.warning("config warning", problem=line)
    from scaler.loop.service import StartupError

    try:
        return asyncio.run(_main(settings))
    except StartupError as exc:
        print(f"scaler run: not starting: {exc}", file=sys.stderr)
        return 2
