"""Machine sizes: Fly's presets and the CPU/memory combinations Fly accepts.

Rules (``docs/fly-behaviour.md``, "Sizing"; fly-go ``MachinePresets``): ``shared`` CPUs come in 1,
2, 4, 6 or 8 with 256 to 2048 MB per CPU in steps of 256 MB; ``performance`` CPUs in 1, 2, 4, 6, 8,
10, 12, 14 or 16 with 2048 to 8192 MB per CPU in multiples of 256 MB. A preset sets ``cpu_kind``,
``cpus`` and the default memory (256 MB per shared CPU, 2048 MB per performance CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scaler.fly.models import Guest

__all__ = ["PRESETS", "Preset", "SizingError", "guest_for", "validate_guest"]

STEP_MB = 256


@dataclass(frozen=True, slots=True)
class Preset:
    """A named machine size."""

    cpu_kind: str
    cpus: int
    memory_mb: int


@dataclass(frozen=True, slots=True)
class _Kind:
    cpus: tuple[int, ...]
    min_mb_per_cpu: int
    max_mb_per_cpu: int


_KINDS: dict[str, _Kind] = {
    "shared": _Kind(cpus=(1, 2, 4, 6, 8), min_mb_per_cpu=256, max_mb_per_cpu=2048),
    "performance": _Kind(
        cpus=(1, 2, 4, 6, 8, 10, 12, 14, 16), min_mb_per_cpu=2048, max_mb_per_cpu=8192
    ),
}

PRESETS: dict[str, Preset] = {
    f"{'shared-cpu' if kind == 'shared' else 'performance'}-{n}x": Preset(
        kind, n, n * spec.min_mb_per_cpu
    )
    for kind, spec in _KINDS.items()
    for n in spec.cpus
}


class SizingError(ValueError):
    """A size Fly would refuse. ``field`` names the offending field (``guest.memory_mb``),
    ``value`` is what was given and ``allowed`` describes what would be accepted."""

    def __init__(self, field: str, value: object, allowed: object, message: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(message)


def _plural(n: int) -> str:
    return "CPU" if n == 1 else "CPUs"


def validate_guest(guest: Guest, *, field: str = "guest") -> Guest:
    """Check ``guest`` against Fly's sizing rules; return it unchanged or raise SizingError.

    Unset fields take Fly's defaults (``shared``, 1 CPU, the least memory for that kind and
    count: 256 MB per shared CPU, 2048 MB per performance CPU) for the check. GPU guests are
    only checked for ``cpu_kind`` and ``cpus``: their memory follows GPU presets.
    """
    kind_name = guest.cpu_kind or "shared"
    kind = _KINDS.get(kind_name)
    if kind is None:
        allowed_kinds = sorted(_KINDS)
        raise SizingError(
            f"{field}.cpu_kind", guest.cpu_kind, allowed_kinds,
            f"{field}.cpu_kind={guest.cpu_kind!r} is not allowed: use one of "
            + ", ".join(repr(k) for k in allowed_kinds),
        )
    cpus = 1 if guest.cpus is None else guest.cpus
    if cpus not in kind.cpus:
        raise SizingError(
            f"{field}.cpus", guest.cpus, list(kind.cpus),
            f"{field}.cpus={guest.cpus} is not allowed for {kind_name} CPUs: use one of "
            + ", ".join(str(c) for c in kind.cpus),
        )
    if guest.gpus or guest.gpu_kind:
        return guest
    memory = cpus * kind.min_mb_per_cpu if guest.memory_mb is None else guest.memory_mb
    low, high = cpus * kind.min_mb_per_cpu, cpus * kind.max_mb_per_cpu
    if not (low <= memory <= high) or memory % STEP_MB:
        raise SizingError(
            f"{field}.memory_mb", guest.memory_mb, range(low, high + 1, STEP_MB),
            f"{field}.memory_mb={guest.memory_mb} is not allowed for {cpus} {kind_name} "
            f"{_plural(cpus)}: use a multiple of {STEP_MB} from {low} to {high}",
        )
    return guest


def guest_for(
    size: str | None = None,
    cpus: int | None = None,
    memory_mb: int | None = None,
    cpu_kind: str | None = None,
    *,
    field: str = "guest",
) -> Guest:
    """A validated :class:`Guest`: the preset ``size`` (default ``shared-cpu-1x``) first, then
    any of ``cpus``, ``memory_mb`` and ``cpu_kind`` given explicitly.

    When ``cpus`` or ``cpu_kind`` changes and ``memory_mb`` is not given, memory is the minimum
    for the new shape (so ``guest_for(cpus=2)`` is 2 shared CPUs with 512 MB).
    """
    name = size or "shared-cpu-1x"
    preset = PRESETS.get(name)
    if preset is None:
        allowed: Sequence[str] = list(PRESETS)
        raise SizingError(
            f"{field}.size", size, allowed,
            f"{field}.size={size!r} is not a known preset: use one of " + ", ".join(allowed),
        )
    kind = cpu_kind or preset.cpu_kind
    n = preset.cpus if cpus is None else cpus
    if memory_mb is None:
        spec = _KINDS.get(kind)
        reshaped = (kind, n) != (preset.cpu_kind, preset.cpus)
        memory_mb = n * spec.min_mb_per_cpu if (spec and reshaped) else preset.memory_mb
    return validate_guest(Guest(cpu_kind=kind, cpus=n, memory_mb=memory_mb), field=field)
