"""Request checks: the spec's schemas, then Fly's semantic rules (image, sizing, durations,
signals). Every error names the field and how to fix it."""

from __future__ import annotations

import re
import signal as signals
from typing import Any

from scaler.fly.spec import validation_errors
from scaler.local.errors import APIError, bad_request

__all__ = [
    "check_body",
    "check_machine_config",
    "parse_duration",
    "parse_signal",
]

SHARED_CPUS = (1, 2, 4, 6, 8)
PERFORMANCE_CPUS = (1, 2, 4, 6, 8, 10, 12, 14, 16)
PRESETS: dict[str, tuple[str, int, int]] = {
    **{f"shared-cpu-{n}x": ("shared", n, 256 * n) for n in SHARED_CPUS},
    **{f"performance-{n}x": ("performance", n, 2048 * n) for n in PERFORMANCE_CPUS},
}
SIGNAL_NAMES = (
    "SIGABRT", "SIGALRM", "SIGFPE", "SIGHUP", "SIGILL", "SIGINT", "SIGKILL", "SIGPIPE",
    "SIGQUIT", "SIGSEGV", "SIGTERM", "SIGTRAP", "SIGUSR1", "SIGUSR2",
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def check_body(body: Any, schema_name: str) -> None:
    """400 naming the first offending fields if ``body`` does not match the spec's schema."""
    errors = validation_errors(body, schema_name)
    if errors:
        raise bad_request("invalid request body: " + "; ".join(errors[:5]))


def parse_duration(value: Any, field: str) -> float:
    """Seconds from a Go duration string (``"10s"``, ``"1m30s"``), a number of seconds as a
    string, or a JSON number of nanoseconds (what fly-go's Duration marshals)."""
    if isinstance(value, bool):
        raise bad_request(f"{field}: expected a duration like '10s', got {value!r}")
    if isinstance(value, int | float):
        return float(value) / 1e9
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise bad_request(f"{field}: invalid duration {value!r}; use e.g. '10s' or '1m30s'")
    return total


def parse_signal(value: Any, field: str = "signal") -> int:
    """A signal number from a name (``SIGTERM``, ``TERM``) or a number (fly-go sends 9)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(signals.Signals(value))
        except ValueError:
            raise bad_request(f"{field}: unknown signal number {value}") from None
    if isinstance(value, str):
        name = value.strip().upper()
        if name.isdigit():
            return parse_signal(int(name), field)
        if not name.startswith("SIG"):
            name = "SIG" + name
        if name in SIGNAL_NAMES:
            return int(getattr(signals, name))
    raise bad_request(f"{field}: unknown signal {value!r}; use one of {', '.join(SIGNAL_NAMES)}")


def check_machine_config(config: Any) -> dict[str, Any]:
    """Fly's semantic rules on a machine config; returns it with guest defaults filled in."""
    if not isinstance(config, dict):
        raise bad_request("config: required; send an object with at least config.image")
    image = config.get("image")
    if not isinstance(image, str) or not image.strip():
        raise bad_request("config.image: required; set it to an image reference like 'alpine:3'")
    config["guest"] = _check_guest(config.get("guest"), config.get("size"))
    restart = config.get("restart")
    if isinstance(restart, dict):
        retries = restart.get("max_retries")
        if retries is not None and retries < 0:
            raise bad_request("config.restart.max_retries: must be >= 0")
    stop = config.get("stop_config")
    if isinstance(stop, dict):
        if stop.get("signal") is not None:
            parse_signal(stop["signal"], "config.stop_config.signal")
        if stop.get("timeout") is not None:
            timeout = parse_duration(stop["timeout"], "config.stop_config.timeout")
            if timeout > 300:
                raise bad_request("config.stop_config.timeout: at most 300s")
    mounts = config.get("mounts") or []
    if len(mounts) > 1:
        raise bad_request("config.mounts: a machine can mount at most one volume")
    for i, mount in enumerate(mounts):
        if not mount.get("volume"):
            raise bad_request(f"config.mounts.{i}.volume: required (a volume id)")
    metadata = config.get("metadata")
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise bad_request("config.metadata: values must be strings")
    return config


def _check_guest(guest: Any, size: Any) -> dict[str, Any]:
    if guest is None:
        guest = {}
    out = dict(guest)
    if size is not None and not guest:
        if size not in PRESETS:
            raise bad_request(f"config.size: unknown preset {size!r}; use e.g. 'shared-cpu-1x'")
        kind, cpus, mem = PRESETS[size]
        return {"cpu_kind": kind, "cpus": cpus, "memory_mb": mem}
    kind = out.setdefault("cpu_kind", "shared")
    if kind not in ("shared", "performance"):
        raise bad_request(
            f"config.guest.cpu_kind: {kind!r} is not valid; use 'shared' or 'performance'"
        )
    cpus = out.setdefault("cpus", 1)
    allowed = SHARED_CPUS if kind == "shared" else PERFORMANCE_CPUS
    if cpus not in allowed:
        raise bad_request(
            f"config.guest.cpus: {cpus} is not valid for {kind} CPUs; use one of {allowed}"
        )
    per_cpu_min, per_cpu_max = (256, 2048) if kind == "shared" else (2048, 8192)
    memory = out.setdefault("memory_mb", per_cpu_min * cpus)
    if memory % 256:
        raise bad_request(f"config.guest.memory_mb: {memory} must be a multiple of 256")
    if not per_cpu_min * cpus <= memory <= per_cpu_max * cpus:
        raise bad_request(
            f"config.guest.memory_mb: {memory} is out of range for {cpus} {kind} CPU(s); "
            f"use {per_cpu_min * cpus}..{per_cpu_max * cpus}"
        )
    return out


def require_int(value: str | None, field: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within [lo, hi]."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{field}: expected an integer, got {value!r}") from None
    if not lo <= number <= hi:
        raise APIError(400, f"invalid_argument: {field} must be between {lo} and {hi}")
    return number


def query_bool(value: str | None) -> bool:
    """A boolean query parameter (``true``/``1``)."""
    return value is not None and value.lower() in ("true", "1", "yes")
