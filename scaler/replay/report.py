"""What a simulation measured: per-pool numbers, the table ``scaler simulate`` prints, and the
JSON report. The chart is drawn by :mod:`scaler.replay.chart`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PoolStats", "Report", "format_table", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by the nearest-rank method; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


@dataclass
class PoolStats:
    """One pool over the whole replay."""

    pool: str
    jobs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    waits: list[float] = field(default_factory=list)
    wait_points: list[tuple[float, float]] = field(default_factory=list)
    machines_created: int = 0
    peak_machines: int = 0
    mean_machines: float = 0.0
    machine_seconds: float = 0.0
    cost_usd: float = 0.0
    peak_hour_spend_usd: float = 0.0
    not_taken: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The pool's numbers for the JSON report (without the raw series)."""
        return {
            "jobs": self.jobs, "outcomes": self.outcomes, "lost": self.lost,
            "wait_p50_s": percentile(self.waits, 0.50),
            "wait_p95_s": percentile(self.waits, 0.95),
            "wait_max_s": max(self.waits) if self.waits else None,
            "machines_created": self.machines_created,
            "peak_machines": self.peak_machines,
            "mean_machines": round(self.mean_machines, 4),
            "machine_seconds": round(self.machine_seconds, 3),
            "cost_usd": round(self.cost_usd, 6),
            "peak_hour_spend_usd": round(self.peak_hour_spend_usd, 6),
            "not_taken": self.not_taken,
        }


@dataclass
class Report:
    """One simulation: per pool, the caps checked at every instant, and the series."""

    config: str
    trace_note: str
    origin: float
    virtual_seconds: float
    ticks: int
    pools: list[PoolStats]
    cap_violations: list[str]
    samples_t: list[float]
    samples_depth: dict[str, list[int]]
    samples_machines: dict[str, list[int]]
    peak_hour_spend_usd: float = 0.0

    def pool(self, name: str) -> PoolStats:
        """The stats of one pool."""
        for p in self.pools:
            if p.pool == name:
                return p
        raise KeyError(f"no pool {name!r} in the report")

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: per-pool summaries, the caps check, and the chart's series."""
        return {
            "config": self.config,
            "trace": self.trace_note,
            "virtual_seconds": round(self.virtual_seconds, 3),
            "ticks": self.ticks,
            "caps_held": not self.cap_violations,
            "peak_hour_spend_usd": round(self.peak_hour_spend_usd, 6),
            "cap_violations": self.cap_violations,
            "pools": {p.pool: p.summary() for p in self.pools},
            "series": {
                "t": [round(t, 3) for t in self.samples_t],
                "queue_depth": self.samples_depth,
                "machines": self.samples_machines,
                "waits": {p.pool: [[round(t - self.origin, 3), round(w, 3)]
                                   for t, w in p.wait_points]
                          for p in self.pools},
            },
        }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def format_table(reports: list[tuple[str, Report]]) -> str:
    """The per-pool table, one row per (label, pool); several labels compare configs."""
    head = ("config", "pool", "jobs", "wait p50", "p95", "max", "created", "peak", "mean",
            "machine-s",
            "cost $", "not taken")
    rows = [head]
    for label, r in reports:
        for p in r.pools:
            s = p.summary()
            taken = ", ".join(f"{k} {v}" for k, v in p.not_taken.items()) or "-"
            rows.append((label, p.pool, str(p.jobs), _s(s["wait_p50_s"]), _s(s["wait_p95_s"]),
                         _s(s["wait_max_s"]), str(p.machines_created), str(p.peak_machines),
                         f"{p.mean_machines:.2f}",
                         f"{p.machine_seconds:.0f}", f"{p.cost_usd:.4f}", taken))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    for label, r in reports:
        verdict = "held at every instant" if not r.cap_violations else (
            f"BROKEN {len(r.cap_violations)} times, first: {r.cap_violations[0]}")
        lost = sum(p.lost for p in r.pools)
        lines.append(f"{label}: {r.virtual_seconds:.0f} virtual seconds, {r.ticks} ticks; "
                     f"caps {verdict}; jobs not ended: {lost}")
    return "\n".join(lines)

