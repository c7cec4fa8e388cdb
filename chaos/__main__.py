"""``python -m chaos [--quick] [--only R1,R4] [--out PATH] [--rev REV | --mutant NAME]``: run the
chaos scenarios, print one table (jobs, ran exactly once, max machines per job, leaked machines,
peak live vs cap, 429s, verdict) and the broken invariants, and write the JSON report.

Exit code 1 if any scenario is FAIL or error, else 0 (2 for bad arguments). ``--rev`` and
``--mutant`` run the scaler and the runner of another tree (see :mod:`chaos.tree`) while the local
Machines API and this code stay the checkout's: that is how a scenario shows it can fail.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bench.common import machine_description
from chaos.harness import DEFAULT_REDIS_URL, scenario_context
from chaos.mutants import MUTANTS, MutantError
from chaos.registry import Scenario, discover, select
from chaos.result import ScenarioResult, render_table, worst
from chaos.tree import Tree, tree_under_test

__all__ = ["main", "run_suite"]

RESULTS = Path(__file__).resolve().parent / "results"


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_one(
    scenario: Scenario, *, quick: bool, tree: Tree, redis_url: str | None, keep: bool,
) -> ScenarioResult:
    """Run one scenario; a crash becomes an ``error`` result (the suite goes on)."""
    started = time.monotonic()
    try:
        with scenario_context(scenario.id, quick=quick, tree=tree, redis_url=redis_url,
                              keep_workdir=keep) as ctx:
            try:
                result = scenario.run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                result = ScenarioResult(scenario.id, scenario.title)
                result.fail_with_error(f"{type(exc).__name__}: {exc}")
                result.details["traceback"] = traceback.format_exc()
                result.details["workdir"] = str(ctx.workdir)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the clean-up itself failed
        result = ScenarioResult(scenario.id, scenario.title)
        result.fail_with_error(f"clean-up failed: {type(exc).__name__}: {exc}")
    result.seconds = round(time.monotonic() - started, 1)
    return result


def run_suite(
    scenarios: Sequence[Scenario], *, quick: bool, tree: Tree, redis_url: str | None = None,
    keep: bool = False, progress: Callable[[str], None] | None = None,
) -> list[ScenarioResult]:
    """Run ``scenarios`` one after the other."""
    results = []
    for s in scenarios:
        if progress:
            progress(f"{s.id}: {s.title} ...")
        r = run_one(s, quick=quick, tree=tree, redis_url=redis_url, keep=keep)
        if progress:
            progress(f"{s.id}: {r.verdict} in {r.seconds:.0f}s"
                     + (f" ({'; '.join(r.notes)})" if r.notes else ""))
        results.append(r)
    return results


def progress(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m chaos``."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short faults (CI: all scenarios in < 5 min)")
    parser.add_argument("--only", help="comma-separated scenario ids, e.g. R1,R4")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default chaos/results/latest.json, or quick.json)")
    parser.add_argument("--rev", help="run the scaler and runner of this git revision")
    parser.add_argument("--mutant", choices=sorted(MUTANTS),
                        help="run a deliberately broken scaler/runner (chaos/mutants.py); "
                             "with --rev, a broken copy of that revision")
    parser.add_argument("--redis-url",
                        help=f"Redis (default: env REDIS_URL or {DEFAULT_REDIS_URL})")
    parser.add_argument("--keep", action="store_true",
                        help="keep each scenario's workdir (configs, logs) for a post-mortem")
    args = parser.parse_args(argv)
    try:
        chosen = select(discover(), args.only)
    except ValueError as exc:
        parser.error(str(exc))
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        with tree_under_test(args.rev, args.mutant) as tree:
            progress(f"tree under test: {tree.label} ({tree.root})")
            results = run_suite(chosen, quick=args.quick, tree=tree, redis_url=args.redis_url,
                                keep=args.keep, progress=progress)
    except MutantError as exc:
        print(f"python -m chaos: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m chaos: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    report = {
        "mode": "quick" if args.quick else "full",
        "tree": tree.label,
        "machine": machine_description(args.redis_url or DEFAULT_REDIS_URL),
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": [r.to_dict() for r in results],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(render_table(results))
    print(f"\n{report['mode']} run of {tree.label}, {report['seconds']:.0f}s; JSON: {out}")
    return worst(results)


if __name__ == "__main__":
    sys.exit(main())
