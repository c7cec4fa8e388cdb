"""Scenario discovery: every module ``chaos/scenarios/r<NN>_<slug>.py`` with ``ID``, ``TITLE`` and
``run(ctx) -> ScenarioResult``. Adding a scenario is adding such a file."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chaos.harness import ChaosContext
from chaos.result import ScenarioResult

__all__ = ["Scenario", "discover", "select"]

_FILE = re.compile(r"r(\d+)_[a-z0-9_]+\.py")
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


@dataclass(frozen=True)
class Scenario:
    """One discovered scenario."""

    id: str
    title: str
    module: str
    run: Callable[[ChaosContext], ScenarioResult]


def discover(directory: Path = SCENARIO_DIR) -> list[Scenario]:
    """Every scenario module, in id order (R1, R2, ..., R10, ...). A module whose ``ID`` does not
    match its file name, or that lacks ``TITLE`` or ``run``, is a programming error."""
    found = []
    for path in directory.glob("r*_*.py"):
        match = _FILE.fullmatch(path.name)
        if match is None:
            continue
        name = f"chaos.scenarios.{path.stem}"
        module = importlib.import_module(name)
        sid, title, run = (getattr(module, a, None) for a in ("ID", "TITLE", "run"))
        if sid != f"R{int(match[1])}" or not isinstance(title, str) or not callable(run):
            raise RuntimeError(f"{name}: needs ID = 'R{int(match[1])}', TITLE and run(ctx)")
        found.append((int(match[1]), Scenario(sid, title, name, run)))
    return [s for _, s in sorted(found, key=lambda x: x[0])]


def select(scenarios: Sequence[Scenario], only: str | None) -> list[Scenario]:
    """The scenarios named in ``only`` (``"R1,r4"``), all when empty; unknown ids raise."""
    if not only:
        return list(scenarios)
    by_id = {s.id.upper(): s for s in scenarios}
    wanted = [x.strip().upper() for x in only.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in by_id]
    if unknown:
        raise ValueError(f"--only: unknown scenario(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(by_id)}")
    return [by_id[x] for x in wanted]
