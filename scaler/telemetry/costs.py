"""An estimated price per machine-second, for the cost metrics.

Fly bills started machines by the second at a rate set by CPU kind, CPU count and memory. The table
below is Fly's published list price for the iad region (USD per 30-day month of a preset with its
default memory, plus $5 per extra GB of RAM per month); regions differ, prices change, and discounts
apply, so every figure is overridable in the config's ``[costs]`` table (USD per second, by preset
name). The figure is an estimate for dashboards, never an invoice.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "MONTHLY_USD",
    "SECONDS_PER_MONTH",
    "cost_per_second",
    "price_per_second",
    "size_label",
]

SECONDS_PER_MONTH = 30 * 24 * 3600
EXTRA_GB_MONTHLY_USD = 5.0

# preset -> (USD per month, default memory in MB)
MONTHLY_USD: dict[str, tuple[float, int]] = {
    "shared-cpu-1x": (1.94, 256),
    "shared-cpu-2x": (3.89, 512),
    "shared-cpu-4x": (7.78, 1024),
    "shared-cpu-6x": (11.67, 1536),
    "shared-cpu-8x": (15.55, 2048),
    "performance-1x": (31.00, 2048),
    "performance-2x": (62.00, 4096),
    "performance-4x": (124.00, 8192),
    "performance-6x": (186.00, 12288),
    "performance-8x": (248.00, 16384),
    "performance-10x": (310.00, 20480),
    "performance-12x": (372.00, 24576),
    "performance-14x": (434.00, 28672),
    "performance-16x": (496.00, 32768),
}


def size_label(cpu_kind: str, cpus: int) -> str:
    """The preset name for a CPU kind and count, e.g. ``shared-cpu-2x`` or ``performance-4x``."""
    return f"shared-cpu-{cpus}x" if cpu_kind == "shared" else f"performance-{cpus}x"


def cost_per_second(
    cpu_kind: str,
    cpus: int,
    memory_mb: int,
    overrides: Mapping[str, float] | None = None,
) -> float:
    """Estimated USD per second for one started machine of this size (0.0 if unknown)."""
    return price_per_second(size_label(cpu_kind, cpus), memory_mb, overrides)


def price_per_second(
    label: str, memory_mb: int, overrides: Mapping[str, float] | None = None
) -> float:
    """Estimated USD per second for a started machine of a preset ``label`` (e.g.
    ``shared-cpu-2x``) with ``memory_mb`` of memory (0: the preset's); 0.0 for an unknown label."""
    if overrides and label in overrides:
        return float(overrides[label])
    base = MONTHLY_USD.get(label)
    if base is None:
        return 0.0
    monthly, included_mb = base
    extra_gb = max(0, memory_mb - included_mb) / 1024
    return (monthly + extra_gb * EXTRA_GB_MONTHLY_USD) / SECONDS_PER_MONTH
