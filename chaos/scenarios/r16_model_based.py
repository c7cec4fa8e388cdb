"""R16 model-based: hypothesis explores sequences of enqueues, ticks, scaler crashes and redeploys,
Fly faults (5xx, 429s, capacity refusals, ambiguous and slow creates, listing failures, slow
placement, an outage), machines starting, finishing or dying, Redis pauses and clock steps, against
the scaler's own reconciler, planner and act step run in this process on a fake clock, real Redis
(a private server: steps pause it) and the local Machines API (simulated machines; the test plays
their runner with the runner's own Redis scripts). After every step: never two live machines for
one job, never more machines live at once than the pool cap, no job completed twice. After a
fault-free drain ending every sequence: every job completed or was dead-lettered with a reason,
and no machine is left. A failing sequence is shrunk by hypothesis; the minimal one is reported.
See :mod:`chaos.model_based`.

Quick: the known failing sequences, then 4 random sequences of up to 20 steps; full: 60 of up to
40. ``CHAOS_R16_EXAMPLES`` sets the number of random sequences; ``CHAOS_R16_REPLAY=0`` skips the
known sequences (to watch the search find and shrink a failure on its own).
"""

from __future__ import annotations

import argparse
import logging
import os

import structlog

from chaos.harness import ChaosContext
from chaos.intree import child_main, here_or_in_tree
from chaos.model_based import POOL_CAP, ModelReport, rig, run_model
from chaos.result import ScenarioResult

ID = "R16"
TITLE = "model-based (hypothesis state machine)"

TOKEN_ENV = "CHAOS_API_TOKEN"


def evaluate(quick: bool, redis_url: str, api_url: str, token: str) -> ScenarioResult:
    """Run the state machine in this process."""
    examples, steps, shrink = (4, 20, 45.0) if quick else (60, 40, 300.0)
    examples = int(os.environ.get("CHAOS_R16_EXAMPLES", examples))
    replay = os.environ.get("CHAOS_R16_REPLAY", "1") != "0"
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    try:
        with rig(redis_url, api_url, token) as r:
            report = run_model(r, examples=examples, steps=steps, shrink_seconds=shrink,
                               replay=replay)
    finally:
        structlog.reset_defaults()
    return _result(report, examples, steps)


def _result(report: ModelReport, examples: int, steps: int) -> ScenarioResult:
    result = ScenarioResult(ID, TITLE)
    result.jobs = report.jobs
    result.max_machines_per_job = report.max_machines_per_job
    result.leaked = report.leaked
    result.peak_live = report.peak_live
    result.cap = POOL_CAP
    result.rate_limited = report.rate_limited
    if report.failure is None:
        result.ran_exactly_once = None if report.dead_lettered else (
            report.completed_once == report.jobs
        )
    result.details.update({
        "known_sequences_replayed": report.regressions,
        "random_sequences_run": report.examples - report.regressions,
        "steps_checked": report.steps,
        "examples_asked": examples, "max_steps": steps,
        "completed_once": report.completed_once, "dead_lettered": report.dead_lettered,
        "max_live_machines_per_job": report.max_live_per_job,
        "seconds": round(report.seconds, 1),
    })
    if report.minimal_steps:
        result.details["minimal_failing_sequence"] = report.minimal_steps
    result.check(
        report.failure is None,
        f"{report.failure}; minimal failing sequence ({len(report.minimal_steps)} steps): "
        + "; ".join(s.removeprefix("state.") for s in report.minimal_steps),
    )
    return result


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario: a private Redis and a sim local API here, the scaler of the tree under
    test in this process (or in a child process of that tree)."""
    redis_server = ctx.private_redis()
    api = ctx.local_api(runtime="sim", rate_limits="off")
    args = ["--redis-url", redis_server.url, "--api-url", api.url]
    if not ctx.tree.current:
        os.environ[TOKEN_ENV] = api.token  # inherited by the child, kept off its command line
        ctx.on_cleanup(lambda: os.environ.pop(TOKEN_ENV, None))
    return here_or_in_tree(
        ctx, __name__, args,
        lambda: evaluate(ctx.quick, redis_server.url, api.url, api.token),
        sid=ID, title=TITLE,
    )


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--api-url", required=True)


def _child(args: argparse.Namespace) -> ScenarioResult:
    return evaluate(bool(args.quick), args.redis_url, args.api_url, os.environ[TOKEN_ENV])


if __name__ == "__main__":
    raise SystemExit(child_main(_child, _options))
