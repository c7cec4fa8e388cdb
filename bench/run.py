"""``python -m bench.run [--quick] [--only P1,P2,...] [--out PATH]``: run the benchmarks, print one
table (figure, goal, measured, baseline, ratio, pass/fail) and write JSON with the machine's
description. A missed goal or a scenario that fails is reported, never a crash: the JSON is
written either way and the exit code is 0 (1 only for bad arguments)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import BenchConfig, machine_description, row

__all__ = ["SCENARIOS", "main", "render_table", "run_scenarios"]

#: Scenario id -> (module under ``bench``, what it measures). Each module has ``run(cfg)``.
SCENARIOS: dict[str, tuple[str, str]] = {
    "P1": ("reaction", "enqueue -> create received, wake-ups on vs off"),
    "P1b": ("slot_latency",
            "enqueue -> job entered, realistic timings: warm slot vs create vs suspended worker"),
    "P2": ("create_rate", "per-job creates/s against Fly's create limit, 429s"),
    "P2b": ("warm_start", "launches/s starting warm stopped machines vs create-only"),
    "P2d": ("apps_spread", "a burst of per-job jobs created over 1 app vs 4 apps"),
    "P2c": ("slot_burst", "burst of per-job jobs on warm slots vs create-only, 429s"),
    "P3": ("scale_tick", "one tick at 10k machines, 100 queues, 1M messages"),
    "P4": ("runner_startup", "runner exec -> job entered vs bare import vs dramatiq CLI"),
    "P5": ("end_to_end", "makespan of short jobs, per-job pool and worker pool"),
    "P6": ("github_burst", "GitHub: burst of queued webhooks -> every runner machine started"),
    "API": ("local_api", "local Machines API: list 10k machines, latency and memory"),
}

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a plain-text table."""
    header = ["id", "figure", "goal", "measured", "baseline", "ratio", "result"]
    lines = [header]
    for r in rows:
        passed = r.get("passed")
        verdict = "error" if r.get("error") else "-" if passed is None else (
            "PASS" if passed else "MISS")
        lines.append([
            r["scenario"], r["figure"], r.get("goal", "-"), _fmt(r.get("measured"), r["unit"]),
            _fmt(r.get("baseline"), r["unit"]), _fmt(r.get("ratio"), "x"), verdict,
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def run_scenarios(
    ids: Sequence[str], cfg: BenchConfig, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Run the scenarios ``ids`` and return the whole report (not yet written)."""
    report: dict[str, Any] = {
        "mode": "quick" if cfg.quick else "full",
        "machine": machine_description(cfg.redis_url),
        "scenarios": {},
        "rows": [],
    }
    for sid in ids:
        module_name, what = SCENARIOS[sid]
        progress(f"{sid}: {what} ...")
        started = time.monotonic()
        entry: dict[str, Any] = {"what": what}
        try:
            module = importlib.import_module(f"bench.{module_name}")
            result = module.run(cfg)
            entry.update(result)
        except Exception as exc:  # a failed scenario is a finding: report it and go on
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()
            entry["rows"] = [row(sid, "scenario failed", "-", None, "", passed=False,
                                 note=entry["error"])]
            entry["rows"][0]["error"] = entry["error"]
        entry["seconds"] = round(time.monotonic() - started, 2)
        progress(f"{sid}: done in {entry['seconds']:.1f}s"
                 + (f" (error: {entry['error']})" if "error" in entry else ""))
        report["scenarios"][sid] = entry
        report["rows"].extend(entry["rows"])
    return report


def _parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SCENARIOS)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    by_upper = {k.upper(): k for k in SCENARIOS}
    unknown = [s for s in wanted if s.upper() not in by_upper]
    if unknown:
        raise ValueError(
            f"--only: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    return [by_upper[s.upper()] for s in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench.run``."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (under two minutes)")
    parser.add_argument("--only", help="comma-separated scenario ids, e.g. P1,P3")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON path ({DEFAULT_OUT})")
    parser.add_argument("--redis-url", help="Redis to use (default: env REDIS_URL or local)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="shrink every size by this factor (smoke tests; default 1)")
    parser.add_argument("--key-prefix", default="bench",
                        help="prefix of every Redis key written (default: bench)")
    args = parser.parse_args(argv)
    try:
        ids = _parse_only(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING)
    _quiet_structlog()
    if not 0 < args.scale <= 1:
        parser.error("--scale: must be > 0 and <= 1")
    cfg = BenchConfig(
        quick=args.quick, scale=args.scale, key_prefix=args.key_prefix,
        **({"redis_url": args.redis_url} if args.redis_url else {}),
    )
    started = time.monotonic()
    report = run_scenarios(ids, cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    report["seconds"] = round(time.monotonic() - started, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(render_table(report["rows"]))
    print(f"\n{report['mode']} run, {report['seconds']:.0f}s; JSON: {args.out}")
    return 0


def _quiet_structlog() -> None:
    """The scaler logs every decision at info; a benchmark wants only warnings."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


if __name__ == "__main__":
    sys.exit(main())
