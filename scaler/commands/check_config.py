"""``scaler check-config``: validate a config file and print what was understood (never secrets)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scaler.config import ConfigError, default_config_path, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c/--config PATH`` (default: ``$SCALER_CONFIG``, else ``./scaler.toml``)."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="config file (default: $SCALER_CONFIG, else ./scaler.toml)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the understood settings and return 0 (warnings on stderr), or print every problem
    and return 2. A config without a Fly token is a problem: ``scaler run`` would refuse it."""
    path: Path = args.config or default_config_path(os.environ) or Path("scaler.toml")
    try:
        settings = load_settings(path, os.environ)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    from scaler.config.readiness import missing_token, warnings

    no_token = missing_token(settings)
    if no_token is not None:
        print(f"invalid configuration in {path}:\n  - {no_token}", file=sys.stderr)
        return 2
    for line in warnings(settings):
        print(f"warning: {line}", file=sys.stderr)
    print(f"config {path}: OK")
    print(settings.describe())
    return 0
