"""Deliberately broken builds: small named source changes to the scaler or the runner, each
breaking one invariant a scenario measures. ``python -m chaos --only R4 --mutant unfenced`` must
FAIL: that is how a scenario proves it can fail.

Each mutant is a list of ``(path, old_text, new_text)`` applied to a copy of the current ``scaler/``
and ``workers/`` (see :mod:`chaos.tree`). ``old_text`` must occur exactly once: when the code it
targets changed, the mutant is *stale* and says so (update it here), never silently a no-op.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MUTANTS", "MutantError", "apply_mutant"]

Edit = tuple[str, str, str]

MUTANTS: dict[str, list[Edit]] = {}
"""Mutant name -> its source edits (filled below, one block per invariant)."""


class MutantError(ValueError):
    """An unknown, stale or ambiguous mutant."""


def apply_mutant(name: str, tree: Path) -> None:
    """Apply mutant ``name`` to the copy at ``tree`` (its ``scaler/`` and ``workers/``)."""
    edits = MUTANTS.get(name)
    if edits is None:
        raise MutantError(f"unknown mutant {name!r}; known: {', '.join(sorted(MUTANTS))}")
    for path, old, new in edits:
        target = tree / path
        text = target.read_text()
        found = text.count(old)
        if found == 0:
            raise MutantError(
                f"mutant stale: {name}: {path} no longer contains {old[:60]!r}; update "
                "chaos/mutants.py to the code as it is now"
            )
        if found > 1:
            raise MutantError(
                f"mutant ambiguous: {name}: {path} contains {old[:60]!r} {found} times; make "
                "old_text longer in chaos/mutants.py"
            )
        target.write_text(text.replace(old, new))
