"""``scaler simulate``: replay a trace (recorded, or synthetic) through the real planner on a
virtual clock and print per pool what the config would have done (docs/replay.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scaler.commands.common import add_config_argument, load_or_report
from scaler.config import ConfigError, Settings, load_settings
from scaler.replay.report import Report, format_table
from scaler.replay.simfly import SimFly
from scaler.replay.simulator import Simulator
from scaler.replay.synthetic import SyntheticError, synthesize
from scaler.replay.trace import Trace, TraceError, read_trace, write_trace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The trace (``--trace`` or ``--synthetic``), ``--compare``, outputs and pace."""
    add_config_argument(parser)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--trace", type=Path, metavar="PATH", help="a trace from `scaler record`")
    src.add_argument("--synthetic", metavar="SPEC",
                     help='a synthetic trace, e.g. "poisson rate=5/s for 10m, burst 500 at 5m"')
    parser.add_argument("--seed", type=int, default=0, help="seed of --synthetic (default 0)")
    parser.add_argument("--compare", type=Path, metavar="OTHER.toml",
                        help="also run this config on the same trace, side by side")
    parser.add_argument("--speed", default="max", metavar="max|N",
                        help="max (default): as fast as it computes; N: N virtual seconds per "
                        "real second")
    parser.add_argument("--json", type=Path, default=Path("simulate-report.json"),
                        metavar="PATH", help="the JSON report (default simulate-report.json)")
    parser.add_argument("--chart", type=Path, default=Path("simulate-chart.png"),
                        metavar="PATH", help="the PNG chart (default simulate-chart.png)")
    parser.add_argument("--no-chart", action="store_true", help="skip the chart")
    parser.add_argument("--save-trace", type=Path, metavar="PATH",
                        help="write the (synthetic) trace replayed, to replay it again")


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ValueError(f"--speed {text!r}: use max or a positive number (virtual seconds per "
                         "real second)")
    return value


def _paced(speed: float | None) -> Callable[[float, SimFly], None] | None:
    if speed is None:
        return None
    started = time.monotonic()
    origin: list[float] = []

    def on_tick(now: float, fly: SimFly) -> None:
        if not origin:
            origin.append(now)
        ahead = (now - origin[0]) / speed - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)

    return on_tick


def run(args: argparse.Namespace) -> int:
    """Replay, print the table, write the JSON report and the chart; 2 on bad input."""
    if args.trace is None and args.synthetic is None:
        print("scaler simulate: nothing to replay; give --trace PATH (from `scaler record`) or "
              '--synthetic SPEC, e.g. --synthetic "poisson rate=5/s for 10m"', file=sys.stderr)
        return 2
    settings = load_or_report(args, "simulate")
    if settings is None:
        return 2
    configs: list[tuple[str, Settings]] = [(str(args.config or "config"), settings)]
    if args.compare is not None:
        try:
            configs.append((str(args.compare), load_settings(args.compare)))
        except ConfigError as exc:
            print(f"scaler simulate: --compare {args.compare}: {exc}", file=sys.stderr)
            return 2
    try:
        speed = _speed(args.speed)
        trace = _trace(args, settings)
    except (ValueError, TraceError, SyntheticError) as exc:
        print(f"scaler simulate: {exc}", file=sys.stderr)
        return 2
    if args.save_trace is not None:
        write_trace(args.save_trace, trace.header, trace.events)
    reports: list[tuple[str, Report]] = []
    for label, cfg in configs:
        sim = Simulator(cfg, trace, on_tick=_paced(speed))
        reports.append((label, sim.run()))
    print(format_table(reports))
    out = {label: r.to_dict() for label, r in reports}
    args.json.write_text(json.dumps(out if len(reports) > 1 else reports[0][1].to_dict(),
                                    indent=2, sort_keys=True) + "\n")
    print(f"report: {args.json}")
    if not args.no_chart:
        from scaler.replay.chart import write_chart

        write_chart(args.chart, reports)
        print(f"chart: {args.chart}")
    return 0


def _trace(args: argparse.Namespace, settings: Settings) -> Trace:
    if args.trace is not None:
        return read_trace(args.trace)
    first = settings.pools[0].queues[0] if settings.pools else "default"
    return synthesize(args.synthetic, first, seed=args.seed)
