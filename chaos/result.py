"""What a scenario returns, and the table the suite prints.

A :class:`ScenarioResult` starts as PASS; every :meth:`ScenarioResult.check` that fails turns it to
FAIL and adds a note naming the broken invariant. ``error`` means the scenario itself could not run
(a set-up failure, a crash): it is not a proof of anything, but it fails the suite too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["ScenarioResult", "Verdict", "render_table", "worst"]

Verdict = Literal["PASS", "FAIL", "error"]


@dataclass
class ScenarioResult:
    """The outcome of one scenario: the common measures, the verdict and why.

    ``ran_exactly_once``: every job's side effect happened exactly once (None: not measured).
    ``max_machines_per_job``: the most machines one job got, destroyed ones included.
    ``leaked``: our machines still live after the drain. ``peak_live`` vs ``cap``: the most live
    machines of the scenario's app at once, counted by the local API at every state change.
    ``rate_limited``: 429 answers of the local API. ``details``: extra measures by name.
    ``notes``: one line per broken invariant (or the error).
    """

    id: str
    title: str
    jobs: int = 0
    ran_exactly_once: bool | None = None
    max_machines_per_job: int | None = None
    leaked: int | None = None
    peak_live: int | None = None
    cap: int | None = None
    rate_limited: int | None = None
    verdict: Verdict = "PASS"
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, ok: bool, note: str) -> bool:
        """Hold one invariant: when ``ok`` is false the verdict becomes FAIL (unless it is
        already ``error``) and ``note`` says what broke, e.g. ``"invariant 1 (one machine per
        job): job j3 got 2 machines"``. Returns ``ok``."""
        if not ok:
            self.notes.append(note)
            if self.verdict != "error":
                self.verdict = "FAIL"
        return ok

    def fail_with_error(self, message: str) -> None:
        """The scenario could not run to its end."""
        self.verdict = "error"
        self.notes.append(message)

    @property
    def passed(self) -> bool:
        """Whether the verdict is PASS."""
        return self.verdict == "PASS"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    def to_json(self) -> str:
        """One line of JSON (a scenario run in a child process prints this last)."""
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioResult:
        """Back from :meth:`to_dict` (unknown keys are ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def _peak(r: ScenarioResult) -> str:
    if r.peak_live is None:
        return "-"
    return f"{r.peak_live}/{r.cap}" if r.cap is not None else str(r.peak_live)


def render_table(results: Sequence[ScenarioResult]) -> str:
    """The results as a plain-text table, then the notes of every scenario that did not pass."""
    header = ["id", "scenario", "jobs", "ran once", "max/job", "leaked", "peak/cap", "429s",
              "verdict", "s"]
    lines = [header]
    for r in results:
        lines.append([
            r.id, r.title, str(r.jobs), _cell(r.ran_exactly_once), _cell(r.max_machines_per_job),
            _cell(r.leaked), _peak(r), _cell(r.rate_limited), r.verdict, f"{r.seconds:.0f}",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [(r.id, note) for r in results if not r.passed for note in r.notes]
    if notes:
        out.append("")
        out.extend(f"{sid}: {note}" for sid, note in notes)
    return "\n".join(out)


def worst(results: Iterable[ScenarioResult]) -> int:
    """The suite's exit code: 1 if any scenario is FAIL or error, else 0."""
    return 0 if all(r.passed for r in results) else 1
