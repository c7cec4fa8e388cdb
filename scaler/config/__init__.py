"""The scaler's configuration (see :mod:`scaler.config.schema` for the keys): one validated, frozen
:class:`Settings` from a TOML file plus the environment, with every problem reported at once."""

from scaler.config.schema import (
    ConfigError,
    FlySettings,
    GuestSpec,
    HttpSettings,
    PoolSpec,
    PrometheusSettings,
    RedisSettings,
    ScalerSettings,
    Settings,
    default_config_path,
    load_settings,
    mask_url,
    parse_settings,
)

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
