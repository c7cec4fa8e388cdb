"""``scaler status``: what the leader saw and decided in its last tick (read from Redis)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import redis

from scaler.config import ConfigError, default_config_path, load_settings
from scaler.jobs.keys import status_key

__all__ = ["add_arguments", "format_status", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scaler status``."""
    parser.add_argument("-c", "--config", help="config file (default $SCALER_CONFIG or "
                        "./scaler.toml)")
    parser.add_argument("--json", action="store_true", help="print the raw status JSON")


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """A plain-text rendering of a published status."""
    now = time.time() if now is None else now
    lines = [f"last tick {now - float(status['at']):.1f}s ago ({status['seconds'] * 1000:.0f} ms)"]
    lines.append("queues:")
    for q, v in sorted(status["queues"].items()):
        if v is None:
            lines.append(f"  {q}: UNKNOWN")
            continue
        lines.append(
            f"  {q}: ready={v['ready']} delayed={v['delayed']} in_flight={v['in_flight']} "
            f"claimed={v['claimed']} dead={v['dead']}"
        )
    lines.append("machines:")
    for app, ms in sorted(status["machines"].items()):
        if ms is None:
            lines.append(f"  {app}: UNKNOWN")
            continue
        summary = ", ".join(f"{k}={n}" for k, n in sorted(ms.items())) or "none"
        lines.append(f"  {app}: {summary}")
    lines.append("desired: " + ", ".join(f"{p}={n}" for p, n in sorted(status["desired"].items())))
    lines.append("decisions:")
    for d in status["decisions"]:
        lines.append(f"  [{d['outcome']}] {d['message']}")
    if status.get("unknown"):
        lines.append("unknown data: " + ", ".join(sorted(status["unknown"])))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``scaler status``."""
    try:
        path = args.config or default_config_path()
        settings = load_settings(str(path) if path else None)
    except ConfigError as exc:
        print(f"scaler status: {exc}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    try:
        raw = client.get(status_key(settings.redis.prefix))
    except redis.RedisError as exc:
        print(f"scaler status: cannot read Redis at {settings.redis.safe_url}: {exc}",
              file=sys.stderr)
        return 1
    if raw is None:
        print("no status published: is a scaler running (and leader) on this Redis and prefix?")
        return 1
    status = json.loads(raw)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0
