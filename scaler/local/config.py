"""Configuration of the local Machines API: runtime, timings, rate limits, faults, auth."""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["FAST", "REALISTIC", "LocalAPIConfig", "Timings", "timings_named"]

RuntimeName = Literal["process", "sim"]


@dataclass(frozen=True, slots=True)
class Timings:
    """How long each transition takes, in seconds (docs/fly-behaviour.md, "Timings")."""

    create: float = 0.0
    """created -> started (image pull and first boot)."""
    start: float = 0.0
    """stopped -> started."""
    resume: float = 0.0
    """suspended -> started."""
    stop: float = 0.0
    """started -> stopped, on top of the process's own exit (sim: all of it)."""
    suspend: float = 0.0
    destroy: float = 0.0
    update: float = 0.0


FAST = Timings()
REALISTIC = Timings(
    create=3.0, start=1.0, resume=0.3, stop=1.0, suspend=1.0, destroy=0.5, update=1.0
)


def timings_named(name: str) -> Timings:
    """``fast`` or ``realistic``."""
    if name == "fast":
        return FAST
    if name == "realistic":
        return REALISTIC
    raise ValueError(f"timings: unknown preset {name!r}; use 'fast' or 'realistic'")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LocalAPIConfig:
    """Everything the local Machines API needs; every field has a usable default.

    ``faults`` is a fault spec (see :mod:`scaler.local.faults`): a dict, a JSON string or the
    compact ``OP.field=value,...`` form. ``images`` maps an image reference (or its repository)
    to the command a ``process`` machine runs when its config has no ``init.exec``/``cmd``;
    ``image_files`` maps one to a directory whose files every start copies into a ``process``
    machine's fresh root directory (an image with none starts from an empty root).
    """

    host: str = "127.0.0.1"
    port: int = 4280
    runtime: RuntimeName = "process"
    token: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    extra_tokens: tuple[str, ...] = field(default=(), repr=False)
    timings: Timings | str = "fast"
    rate_limits: Literal["fly", "off"] = "fly"
    allow_remote: bool = False
    faults: Mapping[str, Any] | str | None = None
    seed: int | None = None
    workdir: Path | None = None
    images: Mapping[str, list[str]] = field(default_factory=dict)
    image_files: Mapping[str, Path] = field(default_factory=dict)
    region: str = "ord"
    org_slug: str = "personal"
    sim_run_seconds: float | None = None
    """How long a sim machine's main process runs before exiting 0 (None: forever)."""
    sim_exit_code: int = 0
    recent_requests: int = 10_000
    """How many (time, operation, status) rows ``state.recent`` keeps."""
    destroyed_retention: int = 5_000
    """How many destroyed machines per app stay visible (GET, include_deleted)."""
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.runtime not in ("process", "sim"):
            raise ValueError(f"runtime: unknown {self.runtime!r}; use 'process' or 'sim'")
        if self.rate_limits not in ("fly", "off"):
            raise ValueError(f"rate_limits: unknown {self.rate_limits!r}; use 'fly' or 'off'")
        if isinstance(self.timings, str):
            timings_named(self.timings)
        if not self.token:
            raise ValueError("token: must not be empty")
        if not is_loopback(self.host) and not self.allow_remote:
            raise ValueError(
                f"host: refusing to bind {self.host}: the process runtime runs the commands it "
                "is sent. Set allow_remote (--allow-remote) together with an explicit token to "
                "expose it."
            )
        if self.sim_run_seconds is not None and self.sim_run_seconds < 0:
            raise ValueError("sim_run_seconds: must be >= 0 or None (run forever)")

    @property
    def resolved_timings(self) -> Timings:
        """The :class:`Timings` in effect."""
        return self.timings if isinstance(self.timings, Timings) else timings_named(self.timings)

    def all_tokens(self) -> tuple[str, ...]:
        """Every token accepted on /v1 and /_admin."""
        return (self.token, *self.extra_tokens)
