"""The end-of-run summary of ``scaler dev``: did every job run exactly once, and is nothing left?

:func:`compute_summary` is pure (it is given what was sent, the run counts from Redis and the
machine tracker); :func:`format_summary` renders it as the plain text that ``scaler dev`` prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scaler.dev.tracker import FINAL_STATES, MachineTracker

if TYPE_CHECKING:  # not at run time: the producer imports the example app, which sets a broker
    from scaler.dev.producer import SentJob

__all__ = ["Summary", "compute_summary", "format_summary", "percentile"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; ``None`` when empty."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile: q must be in (0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    # q * n / 100, not q / 100 * n: 7 / 100 * 100 is 7.000000000000001, whose ceiling is 8
    return ordered[max(0, math.ceil(q * len(ordered) / 100) - 1)]


@dataclass(frozen=True)
class Summary:
    """The numbers of one run; :attr:`ok` says whether it proves what ``--exit-when-done`` asks."""

    jobs: int
    per_job_jobs: int
    worker_jobs: int
    runs: int
    duplicates: int
    missing: int
    failed: int
    send_errors: int
    machines_created: Mapping[str, int]
    max_live: Mapping[str, int]
    wall_time_s: float
    launch_p50_s: float | None
    launch_p99_s: float | None
    left_by_scaler: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    destroyed_at_exit: int = 0
    machines_left: int = 0
    problem: str | None = None
    target: int | None = None
    """How many jobs were to be sent (``--jobs``); ``None`` for an endless stream."""
    checked: bool = True
    """False for an endless run stopped by the user: the result is reported, not judged."""

    @property
    def running_left(self) -> int:
        """Machines the scaler left neither stopped nor destroyed."""
        return sum(n for states in self.left_by_scaler.values()
                   for state, n in states.items() if state not in FINAL_STATES)

    @property
    def unsent(self) -> int:
        """Jobs of ``--jobs`` that were never sent (the run ended first)."""
        return max(0, (self.target or 0) - self.jobs)

    @property
    def problems(self) -> list[str]:
        """Why the run failed, one phrase a cause; empty when it is :attr:`ok`."""
        counted = (
            (self.duplicates, "duplicate run(s)"),
            (self.missing, "job(s) never ran"),
            (self.failed, "job(s) failed"),
            (self.unsent, "job(s) never sent"),
            (self.send_errors, "job(s) could not be sent"),
            (self.running_left, "machine(s) still running when the run ended"),
            (self.machines_left, "machine(s) could not be destroyed"),
        )
        given = [self.problem] if self.problem is not None else []
        return given + [f"{n} {what}" for n, what in counted if n]

    @property
    def ok(self) -> bool:
        """Every job ran exactly once, none failed, and no machine was left running or at all."""
        return not self.problems


def compute_summary(
    *,
    sent: Sequence[SentJob],
    runs: Mapping[str, int],
    failed: int,
    send_errors: int,
    tracker: MachineTracker,
    wall_time_s: float,
    left_by_scaler: Mapping[str, Mapping[str, int]],
    destroyed_at_exit: int,
    machines_left: int,
    problem: str | None = None,
    target: int | None = None,
    checked: bool = True,
) -> Summary:
    """Summarize a run. ``runs``: job id -> times it ran; ``failed``: dead-lettered messages;
    ``left_by_scaler``: per pool and state, the machines there before the exit clean-up."""
    ids = [s.spec.job_id for s in sent]
    created = tracker.first_created_by_job()
    latencies = [
        created[s.redis_message_id] - s.sent_at
        for s in sent if s.redis_message_id in created
    ]
    per_job = sum(1 for s in sent if s.spec.kind == "thumbnail")
    return Summary(
        jobs=len(sent),
        per_job_jobs=per_job,
        worker_jobs=len(sent) - per_job,
        runs=sum(runs.get(i, 0) for i in ids),
        duplicates=sum(max(0, runs.get(i, 0) - 1) for i in ids),
        missing=sum(1 for i in ids if runs.get(i, 0) == 0),
        failed=failed,
        send_errors=send_errors,
        machines_created=tracker.created(),
        max_live=dict(tracker.max_live),
        wall_time_s=wall_time_s,
        launch_p50_s=percentile(latencies, 50),
        launch_p99_s=percentile(latencies, 99),
        left_by_scaler={p: dict(s) for p, s in left_by_scaler.items() if s},
        destroyed_at_exit=destroyed_at_exit,
        machines_left=machines_left,
        problem=problem,
        target=target,
        checked=checked,
    )


def _pools(values: Mapping[str, int]) -> str:
    return "  ".join(f"{p}={n}" for p, n in sorted(values.items())) or "none"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}s"


def format_summary(s: Summary) -> str:
    """The summary as aligned plain text, ending with ``result: OK``, ``result: FAILED (why)``
    or, for an unchecked run, ``result: stopped``."""
    left = sum(n for states in s.left_by_scaler.values() for n in states.values())
    detail = "; ".join(
        f"{pool}: " + ", ".join(
            f"{n} {state}{' (warm)' if state == 'stopped' else ''}"
            for state, n in sorted(states.items())
        )
        for pool, states in sorted(s.left_by_scaler.items())
    )
    rows = [
        ("jobs", f"{s.jobs} ({s.per_job_jobs} per-job, {s.worker_jobs} worker pool)"
                 + (f", {s.unsent} of {s.target} never sent" if s.unsent else "")),
        ("runs", str(s.runs)),
        ("duplicates", str(s.duplicates)),
        ("missing", str(s.missing)),
        ("failed", str(s.failed)),
        ("send errors", str(s.send_errors)),
        ("machines created", _pools(s.machines_created)),
        ("max live machines", _pools(s.max_live)),
        ("enqueue -> machine created", f"p50 {_seconds(s.launch_p50_s)}  "
                                       f"p99 {_seconds(s.launch_p99_s)} (per-job)"),
        ("wall time", f"{s.wall_time_s:.1f}s"),
        ("left by the scaler", f"{left}" + (f" ({detail})" if detail else "")),
        ("destroyed at exit", str(s.destroyed_at_exit)),
        ("machines left", str(s.machines_left)),
    ]
    width = max(len(k) for k, _ in rows) + 2
    lines = ["scaler dev summary"]
    lines += [f"  {(k + ':').ljust(width)}{v}" for k, v in rows]
    if not s.checked:
        pending = f"; {s.missing} job(s) had not run yet" if s.missing else ""
        lines.append(f"  result: stopped{pending}")
    elif s.ok:
        lines.append("  result: OK")
    else:
        lines.append(f"  result: FAILED ({'; '.join(s.problems)})")
    return "\n".join(lines)
