"""``scaler status``: what the leader saw and decided in its last tick (read from Redis)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import redis

from scaler.commands.common import add_config_argument, load_or_report, redis_of
from scaler.jobs.keys import status_key

__all__ = ["add_arguments", "format_status", "run", "watch"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scaler status``."""
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the raw status JSON")
    parser.add_argument("--watch", action="store_true",
                        help="redraw every --interval until Ctrl-C (a live view)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between redraws with --watch (default 2)")


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
    unknown: dict[str, str] = status.get("unknown") or {}
    for app, ms in sorted(status["machines"].items()):
        if ms is None:
            why = unknown.get(f"fly:{app}")
            lines.append(f"  {app}: UNKNOWN" + (f" ({why})" if why else ""))
            continue
        summary = ", ".join(f"{k}={n}" for k, n in sorted(ms.items())) or "none"
        lines.append(f"  {app}: {summary}")
    lines.append("desired: " + ", ".join(f"{p}={n}" for p, n in sorted(status["desired"].items())))
    budgets = status.get("budgets") or []
    if budgets:
        lines.append("budgets (USD per rolling hour):")
    for b in budgets:
        if b["spent"] is None:
            lines.append(f"  {b['scope']} {b['name']}: budget {b['budget']:.2f}, spend UNKNOWN")
            continue
        lines.append(
            f"  {b['scope']} {b['name']}: spent {b['spent']:.2f} + committed "
            f"{b['committed']:.2f} of {b['budget']:.2f} (left {b['remaining']:.2f})"
        )
    lines.append("decisions:")
    for d in status["decisions"]:
        lines.append(f"  [{d['outcome']}] {d['message']}")
    if unknown:
        lines.append("cannot read:")
        lines.extend(f"  {source}: {why}" for source, why in sorted(unknown.items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``scaler status``."""
    settings = load_or_report(args, "status")
    if settings is None:
        return 2
    client = redis_of(settings)
    try:
        def frame() -> tuple[str, int]:
            return _frame(client, settings.redis.prefix, settings.redis.safe_url, args.json)

        if not args.watch:
            text, rc = frame()
            print(text, file=sys.stdout if rc == 0 else sys.stderr)
            return rc
        return watch(lambda: frame()[0], max(0.2, args.interval))
    finally:
        client.close()


def _frame(client: redis.Redis, prefix: str, where: str, as_json: bool) -> tuple[str, int]:
    """One rendering of the published status, and the exit code it means."""
    try:
        raw = client.get(status_key(prefix))
    except redis.RedisError as exc:
        return f"scaler status: cannot read Redis at {where}: {exc}", 1
    if raw is None:
        return ("no status published: is a scaler running (and leader) on this Redis and "
                "prefix?"), 1
    status = json.loads(raw)
    return (json.dumps(status, indent=2) if as_json else format_status(status)), 0


def watch(
    render: Callable[[], str], interval: float, *,
    sleep: Callable[[float], None] = time.sleep, out: TextIO | None = None,
) -> int:
    """Redraw ``render()`` every ``interval`` seconds until Ctrl-C; 0. A frame that cannot be
    read (Redis down, no leader yet) is shown as such and the view carries on."""
    stream = out if out is not None else sys.stdout
    clear = "\x1b[H\x1b[2J" if stream.isatty() else ""
    try:
        while True:
            stream.write(f"{clear}{time.strftime('%H:%M:%S')}  (Ctrl-C to stop)\n{render()}\n")
            stream.flush()
            sleep(interval)
    except KeyboardInterrupt:
        return 0
