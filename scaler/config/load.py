"""Loading: a TOML file, the environment (which wins) and secret files into :class:`Settings`."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from scaler.config.checks import _cross_problems, _pool_problems
from scaler.config.errors import _format_error, _path
from scaler.config.github import GITHUB_SECRET_ENV, read_github_secrets
from scaler.config.schema import Settings
from scaler.config.values import ConfigError, _Problems

# --- loading ------------------------------------------------------------------------------------


def default_config_path(env: Mapping[str, str] = os.environ) -> Path | None:
    """``$SCALER_CONFIG``, else ``./scaler.toml`` if it exists, else ``None`` (defaults + env)."""
    if env.get("SCALER_CONFIG"):
        return Path(env["SCALER_CONFIG"])
    local = Path("scaler.toml")
    return local if local.exists() else None


def _read_secret_file(path: object, where: str, problems: list[str]) -> str | None:
    if not isinstance(path, str):
        return None
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        problems.append(
            f"{where}: cannot read {path!r} ({exc.strerror or exc}); fix the path or "
            "its permissions"
        )
        return None


def _apply_env(
    data: dict[str, Any], env: Mapping[str, str], problems: list[str]
) -> dict[tuple[str, ...], str]:
    """Move secrets and env overrides into ``data``; return which paths came from which env var."""
    sources: dict[tuple[str, ...], str] = {}

    def section(name: str) -> dict[str, Any]:
        sec = data.get(name)
        if sec is None:
            sec = data[name] = {}
        return sec if isinstance(sec, dict) else {}

    fly, redis_, http = section("fly"), section("redis"), section("http")
    if "token" in fly:
        del fly["token"]
        problems.append(
            "fly.token: a literal token in the config file is refused; set env "
            'FLY_API_TOKEN or fly.token_file = "/path/to/token"'
        )
    if "enqueue_tokens" in http:
        del http["enqueue_tokens"]
        problems.append(
            "http.enqueue_tokens: literal tokens in the config file are refused; set "
            "env SCALER_ENQUEUE_TOKENS (comma separated) or http.tokens_file"
        )
    for var, sec, key in (("FLY_API_URL", fly, "api_url"), ("REDIS_URL", redis_, "url")):
        if env.get(var):
            sec[key] = env[var]
            sources[(("fly" if sec is fly else "redis"), key)] = var
    token = env.get("FLY_API_TOKEN") or _read_secret_file(
        fly.get("token_file"), "fly.token_file", problems
    )
    if token:
        fly["token"] = token.strip()
    raw_tokens = env.get("SCALER_ENQUEUE_TOKENS")
    if raw_tokens is None:
        raw_tokens = _read_secret_file(http.get("tokens_file"), "http.tokens_file", problems)
        sep = "\n"
    else:
        sources[("http", "enqueue_tokens")] = "SCALER_ENQUEUE_TOKENS"
        sep = ","
    if raw_tokens:
        http["enqueue_tokens"] = [t.strip() for t in raw_tokens.split(sep) if t.strip()]
    gh = data.get("github")
    if gh is None and any(var in env for var, _ in GITHUB_SECRET_ENV.values()):
        gh = data["github"] = {}
    if isinstance(gh, dict):
        read_github_secrets(gh, env, _read_secret_file, problems)
    return sources


def parse_settings(data: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Settings:
    """Validate a config mapping (a parsed TOML document) plus env overrides.

    Raises :class:`ConfigError` listing every problem. On success the secrets are registered with
    the log redactor (``scaler.telemetry.logging.register_secret``).
    """
    raw = _deepcopy(data)
    problems: list[str] = []
    sources = _apply_env(raw, env, problems)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        root_checked = any(
            isinstance((e.get("ctx") or {}).get("error"), _Problems) and e["loc"] == ()
            for e in errors
        )
        for err in errors:
            problems.extend(_format_error(err, sources))
        problems.extend(_raw_pool_lines(raw, errors))
        if not root_checked:
            problems.extend(f"{_path(loc)}: {msg}" for loc, msg in _cross_problems(raw))
        raise ConfigError(_dedupe(problems)) from None
    problems.extend(_secrets_in_machine_env(settings))
    if problems:
        raise ConfigError(problems)
    from scaler.telemetry.logging import register_secret

    for secret in settings.secrets():
        register_secret(secret)
    return settings


def _secrets_in_machine_env(settings: Settings) -> list[str]:
    """A pool's env goes into every machine it launches: refuse values that carry the Fly token
    or an enqueue token (under any key), naming the key, never the value. The Redis URL is not
    refused: runners need it to take their job."""
    held = [t.get_secret_value() for t in settings.http.enqueue_tokens]
    if settings.fly.token is not None:
        held.append(settings.fly.token.get_secret_value())
    held.extend(settings.github.secrets())
    held = [h for h in held if len(h) >= 8]  # a short value would match by accident
    out = []
    for i, pool in enumerate(settings.pools):
        for key, value in pool.env.items():
            if any(h in value for h in held):
                out.append(
                    f"pools[{i}].env.{key}: its value holds a secret of the scaler (the Fly token, "
                    "an enqueue token or a GitHub secret), which would reach every machine; "
                    "remove it"
                )
    return out


def load_settings(path: str | Path | None, env: Mapping[str, str] = os.environ) -> Settings:
    """Read a TOML config file (``None``: ``$SCALER_CONFIG``, or no file: defaults and env only)
    and validate it with :func:`parse_settings`. Raises :class:`ConfigError`."""
    if path is None and env.get("SCALER_CONFIG"):
        path = env["SCALER_CONFIG"]
    if path is None:
        return parse_settings({}, env)
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                f"config file {str(p)!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                f"offset {exc.start}); save it as UTF-8"
            ]
        ) from None
    except FileNotFoundError:
        raise ConfigError(
            [
                f"config file {str(p)!r} does not exist; create it (see the example "
                "in scaler/examples/scaler.toml) or pass another path"
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file {str(p)!r}: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None
    try:
        return parse_settings(data, env)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=str(p)) from None


def _raw_pool_lines(raw: Mapping[str, Any], errors: list[Any]) -> list[str]:
    """Cross-key checks of the pools whose own checks did not run (they had type errors)."""
    pools = raw.get("pools")
    if not isinstance(pools, list):
        return []
    failed = {
        e["loc"][1]
        for e in errors
        if len(e["loc"]) >= 2
        and e["loc"][0] == "pools"
        and isinstance(e["loc"][1], int)
        and not isinstance((e.get("ctx") or {}).get("error"), _Problems)
    }
    lines: list[str] = []
    for i in sorted(failed):
        if i < len(pools) and isinstance(pools[i], Mapping):
            found, _ = _pool_problems(pools[i], set(pools[i]))
            lines.extend(f"{_path(('pools', i, *sub))}: {msg}" for sub, msg in found)
    return lines


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deepcopy(v) for v in value]
    return value


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))
