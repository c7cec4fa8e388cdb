"""Smoke test of the benchmark harness: the cheapest scenario (P4, one repetition) through the
real entry point, then the JSON's shape. No timing is asserted: numbers belong to bench/."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # bench/ is not installed; ``python -m bench.run`` runs from ROOT
    sys.path.insert(0, ROOT)

from bench import run as bench_run  # noqa: E402
from bench.common import percentile, row  # noqa: E402

ROW_KEYS = {"scenario", "figure", "goal", "measured", "unit", "baseline", "ratio", "passed",
            "note"}


def test_quick_p4_writes_the_report(
    tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "latest.json"
    code = bench_run.main([
        "--quick", "--only", "p4", "--scale", "0.01", "--out", str(out),
        "--redis-url", redis_url, "--key-prefix", redis_prefix,
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "quick"
    machine = report["machine"]
    for key in ("cpu_model", "cpu_count", "memory_mb", "python", "packages", "git_commit",
                "date"):
        assert key in machine
    assert machine["packages"]["dramatiq"]
    entry = report["scenarios"]["P4"]
    assert "error" not in entry, entry.get("traceback")
    assert entry["details"]["reps"] == 1
    assert len(entry["details"]["runner_ms"]) == 1
    assert [(r["scenario"], r["figure"]) for r in report["rows"]] == [
        ("P4", "runner exec -> job entered vs bare import")]
    for r in report["rows"]:
        assert set(r) >= ROW_KEYS
        assert r["measured"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["measured"] / r["baseline"])
        assert isinstance(r["passed"], bool)
    table = capsys.readouterr().out
    assert "runner exec -> job entered" in table
    assert "PASS" in table or "MISS" in table
    assert not list(redis_client.scan_iter(match=f"{redis_prefix}*"))  # cleaned up


def test_a_failing_scenario_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(bench_run.SCENARIOS, "P4", ("no_such_module", "missing"))
    out = tmp_path / "r.json"
    assert bench_run.main(["--only", "P4", "--out", str(out), "--scale", "0.01"]) == 0
    report = json.loads(out.read_text())
    assert "ModuleNotFoundError" in report["scenarios"]["P4"]["error"]
    assert report["rows"][0]["passed"] is False


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_run.main(["--only", "P9"])
    assert exc.value.code == 2
    assert "P9" in capsys.readouterr().err


def test_rows_and_percentiles() -> None:
    r = row("X", "f", "-", 3.0, "ms", baseline=2.0)
    assert r["ratio"] == 1.5 and r["passed"] is None
    assert row("X", "f", "-", None, "ms", baseline=2.0)["ratio"] is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 99) is None


def test_quick_p6_github_burst_starts_a_runner_machine_per_webhook(
    tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: redis.Redis,
) -> None:
    """P6 at its smallest (4 webhooks): every queued webhook got a started runner machine,
    through the real webhook route, JIT configs and Fly's create limit."""
    out = tmp_path / "latest.json"
    code = bench_run.main([
        "--quick", "--only", "P6", "--scale", "0.01", "--out", str(out),
        "--redis-url", redis_url, "--key-prefix", redis_prefix,
    ])
    assert code == 0
    entry = json.loads(out.read_text())["scenarios"]["P6"]
    assert "error" not in entry, entry.get("traceback")
    details = entry["details"]
    assert details["jobs"] == 4 and len(details["latencies_s"]) == 4
    assert details["generate_jitconfig_calls"] == 4  # one runner registered per job
    assert details["webhook_answers"] == {"202": 4}  # every signed delivery accepted
    assert [r["scenario"] for r in entry["rows"]] == ["P6"] * 4
    assert not list(redis_client.scan_iter(match=f"{redis_prefix}*"))  # cleaned up


def test_p5_turnover_pairs_each_destroyed_machine_with_the_create_it_made_room_for() -> None:
    from bench.end_to_end import CAP, _turnover

    def machine(
        mid: str, launch: float, started: float, stopped: float, gone: float
    ) -> dict[str, Any]:
        events = [("launch", "created", launch), ("start", "started", started),
                  ("exit", "stopped", stopped), ("destroy", "destroyed", gone)]
        return {"id": mid, "events": [{"type": t, "status": s, "timestamp": at * 1000}
                                      for t, s, at in reversed(events)]}  # newest first

    first = [machine(f"a{i}", 0.0, 0.1, 3.0, 3.0) for i in range(CAP)]
    second = [machine(f"b{i}", 3.5, 3.6, 6.0, 6.0) for i in range(CAP)]
    recs = [(event, at, m["id"]) for m, (enter, done) in
            [*((m, (2.0, 2.9)) for m in first), *((m, (5.0, 5.9)) for m in second)]
            for event, at in (("enter", enter), ("done", done))]
    steps = _turnover([*first, *second], recs)
    assert steps == pytest.approx({
        "create_to_started": 0.1,
        "started_to_entered": 1.65,  # the median of 1.9 s (first round) and 1.4 s (second)
        "job": 0.9, "done_to_exit": 0.1, "exit_to_destroyed": 0.0,
        "destroyed_to_next_create": 0.5,  # each second-round create came 0.5 s after a destroy
    })
