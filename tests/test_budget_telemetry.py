"""What operators see of budgets: the job finished line's cost, and ``scaler status``."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from scaler.commands.status import format_status
from scaler.jobs.outcomes import JobEvent
from scaler.telemetry.recorder import _log_job, job_cost


def test_job_finished_line_carries_its_cost() -> None:
    ev = JobEvent("jobs", "q", "done", message_id="m1", started_at=1_000.0, finished_at=13_500.0)
    with capture_logs() as logs:
        _log_job(ev, ev.run_s * 0.002 if ev.run_s is not None else None)
        _log_job(JobEvent("jobs", "q", "done", message_id="m2"))
    assert logs[0]["event"] == "job finished" and logs[0]["cost_usd"] == pytest.approx(0.025)
    assert logs[1]["cost_usd"] is None  # no run time: no cost guessed


def test_status_prints_each_budget_and_an_unknown_spend() -> None:
    status = {
        "at": 100.0, "seconds": 0.01, "queues": {}, "machines": {}, "desired": {"jobs": 0},
        "decisions": [],
        "budgets": [
            {"scope": "global", "name": "all", "budget": 12.5, "spent": 10.0,
             "committed": 0.25, "remaining": 2.25},
            {"scope": "pool", "name": "jobs", "budget": 2.0, "spent": None,
             "committed": None, "remaining": None},
        ],
    }
    text = format_status(status, now=101.0)
    assert "budgets (USD per rolling hour):" in text
    assert "global all: spent 10.00 + committed 0.25 of 12.50 (left 2.25)" in text
    assert "pool jobs: budget 2.00, spend UNKNOWN" in text
    assert "budgets" not in format_status({**status, "budgets": []}, now=101.0)


def test_job_cost_is_machine_seconds_times_price() -> None:
    ev = JobEvent("jobs", "q", "done", machine_id="m1", started_at=104_000.0,
                  finished_at=110_000.0)
    started = {"m1": (100.0, 0.01)}  # listed started at 100 s: 10 s of machine to the job's end
    assert job_cost(ev, started, {"jobs": 0.5}) == pytest.approx(0.1)
    # never seen started (a short job between two ticks): its own 6 s at its pool's price
    assert job_cost(ev, {}, {"jobs": 0.5}) == pytest.approx(3.0)
    assert job_cost(JobEvent("jobs", "q", "done"), {}, {"jobs": 0.5}) is None
