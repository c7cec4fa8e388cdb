"""Fault injection, deterministic for a seed: per-operation latency (before the operation takes
effect or after it), 5xx, 429 storms, capacity errors, ambiguous creates and dropped connections
(an outage); per-machine boots that start late, never finish, or crash mid-run; and an offset of the
API's clock.

A spec is a dict (or its JSON), keyed by operationId (``Machines_create``) or ``*`` for every
operation, plus ``machines`` for machine faults and ``clock`` for the clock::

    {"Machines_create": {"ambiguous_rate": 0.3, "ambiguous_mode": "drop",
                         "latency_after_commit": 4, "latency_jitter": 8},
     "*": {"latency": 0.01, "error_rate": 0.05, "drop_rate": 0.0},
     "machines": {"never_boot_rate": 0.1, "crash_rate": 0.2, "crash_after": 2,
                  "crash_exit_code": 1, "boot_delay": 60},
     "clock": {"offset": 300}}

or the compact CLI form
``Machines_create.ambiguous_rate=0.3,*.error_rate=0.05,machines.crash_rate=0.2,clock.offset=-300``.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "BootFault",
    "ClockFaults",
    "FaultInjector",
    "FaultSpec",
    "MachineFaults",
    "OpFaults",
    "RequestFault",
]

Outcome = Literal["ok", "error", "rate_limit", "capacity", "ambiguous", "drop"]
AmbiguousMode = Literal["408", "5xx", "drop"]


@dataclass(frozen=True, slots=True)
class OpFaults:
    """Faults for one operation (rates are shares of requests, 0..1)."""

    latency: float = 0.0
    """Seconds added before the operation takes effect."""
    latency_after_commit: float = 0.0
    """Seconds between the operation taking effect and its answer (a create's machine exists
    while the client still waits; faulted answers are delayed too)."""
    latency_jitter: float = 0.0
    """Up to this many seconds (uniform, seeded) added to each non-zero latency above."""
    drop_rate: float = 0.0
    """Share of requests whose connection is closed before anything is done: no effect and no
    answer, as in an outage (the admin endpoints still answer)."""
    error_rate: float = 0.0
    error_status: int = 503
    rate_limit_rate: float = 0.0
    capacity_rate: float = 0.0
    """Answered 412 ``insufficient_capacity`` (create, start, update)."""
    ambiguous_rate: float = 0.0
    """Creates only: the machine IS created but the answer is lost: a 408, a 5xx
    (``error_status``) or a dropped connection, by ``ambiguous_mode``."""
    ambiguous_mode: AmbiguousMode = "408"


@dataclass(frozen=True, slots=True)
class MachineFaults:
    """Faults of machines themselves."""

    never_boot_rate: float = 0.0
    """Share of boots that stay in ``starting`` forever."""
    crash_rate: float = 0.0
    """Share of boots whose main process exits with ``crash_exit_code`` after ``crash_after``."""
    crash_after: float = 1.0
    crash_exit_code: int = 1
    boot_delay: float = 0.0
    """Seconds a new machine stays ``created`` before it starts booting (a slow placement)."""


@dataclass(frozen=True, slots=True)
class ClockFaults:
    """The API's clock against the real one."""

    offset: float = 0.0
    """Seconds added to every timestamp the API reports (``created_at``, ``updated_at``, events,
    leases, the ``Date`` header), as if Fly's clock differed from its client's."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Every fault in effect."""

    ops: Mapping[str, OpFaults] = field(default_factory=dict)
    machines: MachineFaults = MachineFaults()
    clock: ClockFaults = ClockFaults()

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | str | None) -> FaultSpec:
        """From a dict, a JSON string or the compact ``OP.field=value,...`` form."""
        if spec is None or spec == "":
            return cls()
        if isinstance(spec, str):
            text = spec.strip()
            spec = json.loads(text) if text.startswith("{") else _parse_compact(text)
        if not isinstance(spec, Mapping):
            raise ValueError("faults: expected an object keyed by operation id or 'machines'")
        ops: dict[str, OpFaults] = {}
        machines = MachineFaults()
        clock = ClockFaults()
        for key, value in spec.items():
            if not isinstance(value, Mapping):
                raise ValueError(f"faults.{key}: expected an object of fault settings")
            if key == "machines":
                machines = _build(MachineFaults, value, f"faults.{key}")
            elif key == "clock":
                clock = _build(ClockFaults, value, f"faults.{key}")
            else:
                ops[key] = _build(OpFaults, value, f"faults.{key}")
        return cls(ops=ops, machines=machines, clock=clock)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {op: asdict(f) for op, f in self.ops.items()}
        out["machines"] = asdict(self.machines)
        out["clock"] = asdict(self.clock)
        return out


def _parse_compact(text: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, raw = item.partition("=")
        scope, dot, name = key.rpartition(".")
        if not eq or not dot:
            raise ValueError(f"faults: {item!r} is not OP.field=value (e.g. *.error_rate=0.1)")
        value: Any = raw
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(raw)
        out.setdefault(scope, {})[name] = value
    return out


_SECONDS = frozenset(
    {"latency", "latency_after_commit", "latency_jitter", "crash_after", "boot_delay"}
)


def _build(kind: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(kind)}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"{where}.{name}: unknown fault; known: {', '.join(known)}")
        if name == "ambiguous_mode":
            if str(value) not in ("408", "5xx", "drop"):
                raise ValueError(f"{where}.{name}: use '408', '5xx' or 'drop'")
            kwargs[name] = str(value)
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{where}.{name}: expected a number, got {value!r}")
        if name.endswith("_rate") and not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}.{name}: a share between 0 and 1, got {value}")
        if name in _SECONDS and value < 0:
            raise ValueError(f"{where}.{name}: a number of seconds >= 0, got {value}")
        kwargs[name] = int(value) if name.endswith(("_status", "_code")) else value
    return kind(**kwargs)


@dataclass(frozen=True, slots=True)
class RequestFault:
    """What to do to one request."""

    latency: float = 0.0
    outcome: Outcome = "ok"
    error_status: int = 503
    ambiguous_mode: AmbiguousMode = "408"
    latency_after_commit: float = 0.0


@dataclass(frozen=True, slots=True)
class BootFault:
    """What happens to one boot."""

    never_boot: bool = False
    crash_after: float | None = None
    crash_exit_code: int = 1


_NO_FAULT = RequestFault()


class FaultInjector:
    """Draws faults from a seeded RNG: the same requests in the same order get the same faults."""

    def __init__(self, spec: FaultSpec | None = None, seed: int | None = None) -> None:
        self.spec = spec or FaultSpec()
        self._rng = random.Random(seed)

    def configure(self, spec: FaultSpec, seed: int | None = None) -> None:
        """Replace the spec (and re-seed when ``seed`` is given)."""
        self.spec = spec
        if seed is not None:
            self._rng = random.Random(seed)

    def for_request(self, operation: str) -> RequestFault:
        """The fault for one request of ``operation`` (usually none)."""
        rule = self.spec.ops.get(operation) or self.spec.ops.get("*")
        if rule is None:
            return _NO_FAULT
        draw = self._rng.random
        outcome: Outcome = "ok"
        if rule.drop_rate and draw() < rule.drop_rate:
            outcome = "drop"
        elif rule.rate_limit_rate and draw() < rule.rate_limit_rate:
            outcome = "rate_limit"
        elif rule.error_rate and draw() < rule.error_rate:
            outcome = "error"
        elif rule.capacity_rate and draw() < rule.capacity_rate:
            outcome = "capacity"
        elif (
            rule.ambiguous_rate and operation == "Machines_create" and draw() < rule.ambiguous_rate
        ):
            outcome = "ambiguous"
        latency, after = rule.latency, rule.latency_after_commit
        if rule.latency_jitter:
            latency += rule.latency_jitter * draw() if latency else 0.0
            after += rule.latency_jitter * draw() if after else 0.0
        return RequestFault(latency, outcome, rule.error_status, rule.ambiguous_mode, after)

    def for_boot(self) -> BootFault:
        """The fault for one boot of a machine."""
        m = self.spec.machines
        if m.never_boot_rate and self._rng.random() < m.never_boot_rate:
            return BootFault(never_boot=True)
        if m.crash_rate and self._rng.random() < m.crash_rate:
            return BootFault(crash_after=m.crash_after, crash_exit_code=m.crash_exit_code)
        return BootFault()
