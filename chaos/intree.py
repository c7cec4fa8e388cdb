"""Scenarios that run scaler code in this process (the pure planner, the reconciler's pieces) and
still honour ``--rev`` / ``--mutant``: in the current tree they run here; otherwise their own module
runs as a child process of the tree under test and prints its :class:`ScenarioResult` as JSON on
its last line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from chaos.harness import ChaosContext
from chaos.result import ScenarioResult

__all__ = ["child_main", "here_or_in_tree"]


def here_or_in_tree(
    ctx: ChaosContext, module: str, args: Sequence[str], here: Callable[[], ScenarioResult],
    *, sid: str, title: str, timeout: float = 600,
) -> ScenarioResult:
    """``here()`` for the current tree; else ``python -m module --quick? args`` in the tree."""
    if ctx.tree.current:
        return here()
    argv = [*(["--quick"] if ctx.quick else []), *args]
    done = ctx.run_in_tree(module, argv, timeout=timeout)
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return ScenarioResult.from_dict(json.loads(line))
            except (ValueError, TypeError):
                break
    result = ScenarioResult(sid, title)
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
    result.fail_with_error(f"{module} in {ctx.tree.label} exited {done.returncode}: {tail}")
    return result


def child_main(
    evaluate: Callable[[argparse.Namespace], ScenarioResult],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """The ``__main__`` of such a module: parse ``--quick`` (and ``extra`` options), evaluate,
    print the result as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    result = evaluate(args)
    sys.stdout.write(result.to_json() + "\n")
    sys.stdout.flush()
    return 0
