"""The terminal view of ``scaler dev``: a :class:`Snapshot` of the run, rendered with rich
(:func:`render`, for ``rich.live.Live``) or as one plain line (:func:`plain_line`, when stdout is
not a terminal)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["FIXED_LINES", "DecisionRow", "QueueRow", "Snapshot", "plain_line", "render"]


@dataclass(frozen=True)
class QueueRow:
    """One queue's counts (from the scaler's last observation)."""

    ready: int
    in_flight: int
    delayed: int
    claimed: int
    dead: int


@dataclass(frozen=True)
class DecisionRow:
    """A decision of the planner, ``at`` seconds into the run."""

    at: float
    pool: str
    outcome: str
    kind: str
    reason: str
    message: str


@dataclass(frozen=True)
class Snapshot:
    """Everything the view shows at one instant."""

    elapsed: float
    queues: Mapping[str, QueueRow | None] = field(default_factory=dict)
    machines: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    created: Mapping[str, int] = field(default_factory=dict)
    launches: int = 0
    reaps: int = 0
    jobs_sent: int = 0
    jobs_target: int | None = None
    jobs_done: int = 0
    jobs_failed: int = 0
    duplicates: int = 0
    decisions: tuple[DecisionRow, ...] = ()
    info: tuple[tuple[str, str], ...] = ()
    status: str = "running"


def _jobs_text(s: Snapshot) -> str:
    target = f"/{s.jobs_target}" if s.jobs_target is not None else ""
    return (f"sent {s.jobs_sent}{target}  done {s.jobs_done}  failed {s.jobs_failed}  "
            f"duplicates {s.duplicates}")


def _states(states: Mapping[str, int]) -> str:
    return " ".join(f"{state}={n}" for state, n in sorted(states.items())) or "-"


FIXED_LINES = 13
"""Lines the view takes besides the info, queue and decision rows (to fit the terminal)."""


def render(s: Snapshot, max_decisions: int = 8) -> RenderableType:
    """The whole view: header (with machines per pool and state), queues, then the last
    decisions (at most ``max_decisions``, newest last, one line each)."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for key, value in s.info:
        head.add_row(key, value)
    head.add_row("status", f"{s.status}, {s.elapsed:.1f}s")
    head.add_row("jobs", _jobs_text(s))
    head.add_row("machines", "  ".join(
        f"{pool}: {_states(s.machines.get(pool, {}))}"
        for pool in sorted(set(s.machines) | set(s.created))
    ) or "none")
    head.add_row("counters", f"launches {s.launches}  reaps {s.reaps}  created "
                 + (" ".join(f"{p}={n}" for p, n in sorted(s.created.items())) or "0"))

    queues = Table(title="queues", box=box.SIMPLE_HEAD, show_edge=False, title_justify="left",
                   expand=True)
    queues.add_column("queue", no_wrap=True, min_width=max((len(q) for q in s.queues), default=5))
    for col in ("ready", "in flight", "delayed", "claimed", "dead"):
        queues.add_column(col, justify="right", no_wrap=True)
    for name, row in sorted(s.queues.items()):
        if row is None:
            queues.add_row(name, *(["?"] * 5), style="red")
        else:
            queues.add_row(name, str(row.ready), str(row.in_flight), str(row.delayed),
                           str(row.claimed), str(row.dead))

    decisions = Table(title="last decisions", box=box.SIMPLE_HEAD, show_edge=False,
                      title_justify="left", expand=True)
    decisions.add_column("t", justify="right", no_wrap=True)
    decisions.add_column("pool", no_wrap=True)
    decisions.add_column("decision", no_wrap=True)
    decisions.add_column("why", no_wrap=True, overflow="ellipsis", ratio=1)
    shown = s.decisions[-max_decisions:] if max_decisions > 0 else ()
    for d in shown:
        style = "green" if d.outcome == "acted" else "yellow"
        decisions.add_row(f"{d.at:.1f}s", d.pool, Text(f"{d.kind} {d.outcome}", style=style),
                          d.message)
    return Panel(Group(head, queues, decisions), title="scaler dev", subtitle="Ctrl-C to stop")


def plain_line(s: Snapshot) -> str:
    """One line for logs and CI: time, jobs, queues, machines."""
    queues = " ".join(
        f"{name}[?]" if row is None else
        f"{name}[ready={row.ready} inflight={row.in_flight} claimed={row.claimed} "
        f"dead={row.dead}]"
        for name, row in sorted(s.queues.items())
    )
    machines = " ".join(f"{p}[{_states(st)}]" for p, st in sorted(s.machines.items())) or "none"
    return (f"t={s.elapsed:.1f}s jobs: {_jobs_text(s)} | queues: {queues or '-'} | "
            f"machines: {machines} | launches={s.launches} reaps={s.reaps}")
