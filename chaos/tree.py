"""The tree under test: the scaler and the runner a scenario runs, while the local Machines API and
the chaos code stay the current checkout's.

- ``current``: this checkout (the working copy, uncommitted changes included).
- ``--rev REV``: ``git worktree add --detach`` of REV in a temp dir, removed afterwards.
- ``--mutant NAME``: a temp copy of the current ``scaler/`` and ``workers/`` with one small source
  change from :data:`chaos.mutants.MUTANTS`, to show a scenario fails when its invariant breaks.

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
def tree_under_test(rev: str | None = None, mutant: str | None = None) -> Iterator[Tree]:
    """The tree to run (at most one of ``rev`` and ``mutant``); temp trees are removed after."""
    if rev and mutant:
        raise ValueError("--rev and --mutant: choose one")
    if not rev and not mutant:
        yield Tree(ROOT, "current")
        return
    tmp = Path(tempfile.mkdtemp(prefix="chaos-tree-"))
    try:
        if rev:
            commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
            where = tmp / "tree"
            _git("worktree", "add", "--detach", str(where), commit)
            try:
                yield Tree(where, f"rev {rev} ({commit[:10]})")
            finally:
                with contextlib.suppress(RuntimeError):
                    _git("worktree", "remove", "--force", str(where))
        else:
            assert mutant is not None
            where = tmp / "tree"
            for package in ("scaler", "workers"):
                shutil.copytree(ROOT / package, where / package,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            apply_mutant(mutant, where)
            yield Tree(where, f"mutant {mutant}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
