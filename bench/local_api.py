"""The local Machines API itself: :func:`bench.local_api_bench.main` (10,000 sim machines in 10
apps; list latency with ``summary=true`` and with a metadata filter; resident memory), run in a
child process so the memory figure is the server's and not the harness's. Same size in both
modes: the figure is about 10,000 machines."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any

from bench.common import ROOT, BenchConfig, row

__all__ = ["run"]


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run the local API benchmark; returns ``{"rows": [...], "details": {...}}``."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.local_api", "--child"], cwd=ROOT, capture_output=True,
        text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"local API benchmark failed ({out.returncode}): {out.stderr[-2000:]}")
    d: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    n = f"{d['list_summary_rows']:,} of {d['machines']:,} machines"
    rows = [
        row("API", f"list one app, summary ({n})", "-", d["list_summary_ms_median"], "ms",
            note="median over HTTP"),
        row("API", "list with metadata filter, summary", "-",
            d["list_metadata_filter_ms_median"], "ms",
            note=f"{d['list_metadata_filter_rows']} rows"),
        row("API", f"server RSS holding {d['machines']:,} sim machines", "-", d["rss_mb"], "MB",
            note=f"+{d['rss_delta_mb']} MB over an empty server process"),
    ]
    return {"rows": rows, "details": d}


def _child() -> int:
    from bench.local_api_bench import main

    with contextlib.redirect_stdout(sys.stderr):
        result = main()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child() if sys.argv[1:] == ["--child"] else 2)
