"""The Prometheus config and alert rules: promtool accepts them, their unit tests pass and cover
every alert both firing and quiet, and every metric they name is exported by the scaler."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.scaler_harness import require_binary
from tests.test_grafana import METRIC_NAME, exported_series_names

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
CONFIG = PROM_DIR / "prometheus.yml"

pytestmark = pytest.mark.prometheus


def promtool() -> str:
    """The promtool binary; skipped when absent, except under CI where it must be installed."""
    return require_binary("promtool", "Debian: apt-get install prometheus")


def run_promtool(*args: str) -> str:
    proc = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    assert f"SUCCESS: {len(rules())} rules found" in run_promtool("check", "rules", str(ALERTS))


def test_promtool_checks_the_config_and_finds_the_rule_file() -> None:
    output = run_promtool("check", "config", str(CONFIG))
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", str(ALERTS_TEST))


def test_every_alert_has_severity_summary_and_description() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_every_metric_in_an_alert_is_exported() -> None:
    exported = exported_series_names()
    unknown = {(rule["alert"], name) for rule in rules()
               for name in METRIC_NAME.findall(rule["expr"]) if name not in exported}
    assert not unknown, f"alerts name metrics the Metrics catalog does not export: {unknown}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = yaml.safe_load(ALERTS_TEST.read_text())
    assert cases["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) <= names, "unit tests name alerts that do not exist"


def test_required_alerts_exist() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    wanted = {
        "queue latency": "fly_scaler_queue_oldest_ready_age_seconds",
        "leaked failed machines": 'fly_scaler_machines{state="failed"}',
        "live machines without demand": "fly_scaler_desired_machines",
        "sustained 429s": 'code="429"',
        "tick errors": "fly_scaler_tick_errors_total",
        "stale ticks": "fly_scaler_last_tick_timestamp_seconds",
        "no leader": "max(fly_scaler_leader) == 0",
        "cap near": "fly_scaler_cap_usage_ratio",
        "data unknown": "fly_scaler_data_unknown",
        "budget nearly spent": "fly_scaler_budget_per_hour_usd",
        "launches refused for budget": 'reason="budget"',
    }
    for what, needle in wanted.items():
        assert any(needle in expr for expr in exprs.values()), f"no alert for {what}"
