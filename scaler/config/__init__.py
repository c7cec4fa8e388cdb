"""The scaler's configuration: one validated, frozen :class:`Settings` from a TOML file plus the
environment, with every problem reported at once (one line each, naming the key).

- :mod:`~scaler.config.schema`: the sections and their keys (start here);
- :mod:`~scaler.config.values`: value types, name rules, the error types;
- :mod:`~scaler.config.checks`: checks across one pool's keys and across sections;
- :mod:`~scaler.config.errors`: the wording of problems;
- :mod:`~scaler.config.load`: file, environment and secret files.
"""

from scaler.config.load import default_config_path, load_settings, parse_settings
from scaler.config.schema import (
    FlySettings,
    GuestSpec,
    HttpSettings,
    PoolSpec,
    PrometheusSettings,
    RedisSettings,
    ScalerSettings,
    Settings,
)
from scaler.config.values import ConfigError, mask_url

__all__ = [
    "ConfigError",
    "FlySettings",
    "GuestSpec",
    "HttpSettings",
    "PoolSpec",
    "PrometheusSettings",
    "RedisSettings",
    "ScalerSettings",
    "Settings",
    "default_config_path",
    "load_settings",
    "mask_url",
    "parse_settings",
]
