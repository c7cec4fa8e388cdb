"""What the commands that read a running scaler's Redis share: their config and their client."""

from __future__ import annotations

import argparse
import sys

import redis

from scaler.config import ConfigError, Settings, default_config_path, load_settings

__all__ = ["add_config_argument", "load_or_report", "redis_of"]


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``-c/--config PATH``."""
    parser.add_argument("-c", "--config", help="config file (default $SCALER_CONFIG or "
                        "./scaler.toml)")


def load_or_report(args: argparse.Namespace, command: str) -> Settings | None:
    """The settings, or None after printing every problem as ``scaler COMMAND: ...``."""
    try:
        path = args.config or default_config_path()
        return load_settings(str(path) if path else None)
    except ConfigError as exc:
        print(f"scaler {command}: {exc}", file=sys.stderr)
        return None


def redis_of(settings: Settings) -> redis.Redis:
    """A client of the scaler's Redis that gives up on a dead server after 5 s."""
    return redis.Redis.from_url(settings.redis.url.get_secret_value(), socket_timeout=5)
