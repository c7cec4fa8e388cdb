"""The tree under test: the scaler and the runner a scenario runs, while the local Machines API and
the chaos code stay the current checkout's.

- ``current``: this checkout (the working copy, uncommitted changes included).
- ``--rev REV``: ``git worktree add --detach`` of REV in a temp dir, removed afterwards.
- ``--mutant NAME``: a temp copy of the current ``scaler/`` and ``workers/`` with one small source
  change from :data:`chaos.mutants.MUTANTS`, to show a scenario fails when its invariant breaks;
  with ``--rev`` too, the copy is of that revision's.

Processes of the tree under test run with ``PYTHONPATH=<tree>:<checkout>`` and their working
directory in the tree: ``PYTHONPATH`` comes before site-packages, so it beats the virtualenv's
editable install (a meta-path finder consulted after the path), and the checkout behind it provides
:mod:`chaos.actors` to machines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT
from chaos.mutants import apply_mutant

__all__ = ["ROOT", "Tree", "tree_under_test"]


@dataclass(frozen=True)
class Tree:
    """Where the scaler and the runner under test come from."""

    root: Path
    label: str
    """``current``, ``rev <REV>`` or ``mutant <NAME>``."""

    @property
    def current(self) -> bool:
        """Whether this is the checkout itself."""
        return self.root == ROOT

    @property
    def pythonpath(self) -> str:
        """``PYTHONPATH`` for processes of this tree (the checkout second, for chaos.actors)."""
        return str(self.root) if self.current else f"{self.root}{os.pathsep}{ROOT}"

    def env(self, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
        """``base`` (default: this process's env) with this tree's ``PYTHONPATH``."""
        env = dict(os.environ if base is None else base)
        env.update(extra)
        env["PYTHONPATH"] = self.pythonpath
        return env


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def _worktree(rev: str, tmp: Path) -> Iterator[Path]:
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    where = tmp / "rev"
    _git("worktree", "add", "--detach", str(where), commit)
    try:
        yield where
    finally:
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(where))


@contextlib.contextmanager
def tree_under_test(rev: str | None = None, mutant: str | None = None) -> Iterator[Tree]:
    """The tree to run: the checkout, a revision, a mutant of the checkout, or (both given) a
    mutant of a revision. Temp trees are removed afterwards."""
    if not rev and not mutant:
        yield Tree(ROOT, "current")
        return
    tmp = Path(tempfile.mkdtemp(prefix="chaos-tree-"))
    try:
        with contextlib.ExitStack() as stack:
            base = stack.enter_context(_worktree(rev, tmp)) if rev else ROOT
            label = f"rev {rev} ({_git('rev-parse', '--short', 'HEAD', cwd=base)})" if rev else ""
            if not mutant:
                yield Tree(base, label)
                return
            where = tmp / "mutant"
            for package in ("scaler", "workers"):
                shutil.copytree(base / package, where / package,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            apply_mutant(mutant, where)
            yield Tree(where, f"mutant {mutant}" + (f" of {label}" if label else ""))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
