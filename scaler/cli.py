"""The ``scaler`` command: ``run | dev | local-api | status | jobs | check-config | init |
record | simulate``.

Each subcommand lives in the module that owns it; this file only wires them up.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help). The module provides add_arguments(parser) and run(args).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("scaler.commands.run", "run the scheduler against Redis and the Fly Machines API"),
    "dev": ("scaler.commands.dev", "the whole system on this machine, with a live view"),
    "local-api": ("scaler.local.cli", "serve the local Machines API (machines as local processes)"),
    "status": ("scaler.commands.status", "print queues, machines and the last decisions"),
    "check-config": ("scaler.commands.check_config", "validate a config file and print it"),
    "jobs": ("scaler.commands.jobs", "each queue's jobs and dead letters; retry or purge them"),
    "init": ("scaler.commands.init", "scaffold scaler.toml and an actors module in a folder"),
    "record": ("scaler.commands.record", "record what the scaler observes into a trace file"),
    "simulate": ("scaler.commands.simulate", "replay a trace through the planner on a virtual "
                 "clock: waits, machines, cost"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="scaler",
        description="fly-scaler: launch Fly Machines for queued dramatiq jobs, within caps and "
        "Fly's rate limits. Start with `scaler dev` (everything on this machine); "
        "`scaler COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    rc: int = importlib.import_module(args._module).run(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
