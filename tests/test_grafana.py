"""The Grafana dashboard and provisioning: they parse, every panel queries something, every metric a
query names is one the scaler exports, and the provisioning points at files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaler.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "fly-scaler.json"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "fly-scaler.yml"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"

METRIC_NAME = re.compile(r"\bfly_scaler_[a-zA-Z0-9_]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


def exported_series_names() -> dict[str, str]:
    """Every series name a Metrics() registry can expose, mapped to its family's name."""
    names: dict[str, str] = {}
    for family in Metrics().registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def query_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row, including panels nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in query_panels(dash) for t in p.get("targets", [])]


def test_dashboard_is_a_prometheus_dashboard_with_a_datasource_variable() -> None:
    dash = dashboard()
    assert dash["uid"] == "fly-scaler"
    assert dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("pool", "queue"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_every_panel_has_a_query_on_the_datasource_variable() -> None:
    dash = dashboard()
    panels = query_panels(dash)
    assert len(panels) >= 20
    ids = [p["id"] for p in dash["panels"]] + [p["id"] for p in panels if p not in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        where = f"panel {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel.get("targets"), f"{where} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{where} has an empty query"
            assert target["datasource"]["uid"] == "${datasource}", where
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{where} is wider than the grid"
        assert panel.get("description"), f"{where} needs a description"


def test_every_metric_in_a_query_is_exported() -> None:
    exported = exported_series_names()
    unknown = {
        (title, name)
        for title, expr in exprs(dashboard())
        for name in METRIC_NAME.findall(expr)
        if name not in exported
    }
    assert not unknown, f"queries name metrics the Metrics catalog does not export: {unknown}"


def test_every_exported_metric_is_on_the_dashboard() -> None:
    exported = exported_series_names()
    shown = {exported[name] for _, expr in exprs(dashboard()) for name in
             METRIC_NAME.findall(expr) if name in exported}
    missing = sorted(set(exported.values()) - shown)
    assert not missing, f"metrics without a panel: {missing}"


def test_rate_queries_use_the_rate_interval() -> None:
    """Fixed ranges break when the scrape interval changes; Grafana's variables do not."""
    for title, expr in exprs(dashboard()):
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "$__range"), f"{title!r}: [{window}]"


def test_histogram_quantiles_aggregate_by_le() -> None:
    for title, expr in exprs(dashboard()):
        if "histogram_quantile" in expr:
            assert re.search(r"by \(le\b", expr), f"{title!r} must keep le: {expr}"
            assert "_bucket" in expr, title


def _compose_mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts: dict[str, Path] = {}
    for volume in compose["services"][service].get("volumes", []):
        host, container = volume.split(":")[:2]
        mounts[container] = (COMPOSE.parent / host).resolve()
    return mounts


def _host_path(container_path: str, mounts: dict[str, Path]) -> Path:
    for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target + "/"):
            return source / container_path[len(target):].lstrip("/")
    pytest.fail(f"{container_path} is not mounted into the grafana service of docker-compose.yml")


def test_datasource_provisioning_defines_the_prometheus_datasource() -> None:
    provisioning = yaml.safe_load(DATASOURCES.read_text())
    assert provisioning["apiVersion"] == 1
    (source,) = provisioning["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"  # the compose service
    scrape = yaml.safe_load(PROMETHEUS_YML.read_text())["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape, "$__rate_interval needs the interval"


def test_dashboard_provider_points_at_the_dashboard_through_the_compose_mounts() -> None:
    provisioning = yaml.safe_load(PROVIDERS.read_text())
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    mounts = _compose_mounts("grafana")
    directory = _host_path(provider["options"]["path"], mounts)
    assert directory.is_dir(), directory
    assert (directory / DASHBOARD.name).resolve() == DASHBOARD
    provisioning_dir = _host_path("/etc/grafana/provisioning", mounts)
    assert (provisioning_dir / "datasources" / DATASOURCES.name).resolve() == DATASOURCES
    assert (provisioning_dir / "dashboards" / PROVIDERS.name).resolve() == PROVIDERS


def test_compose_home_dashboard_exists() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    env = compose["services"]["grafana"]["environment"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(home, _compose_mounts("grafana")).resolve() == DASHBOARD


def _row_panels(dash: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels of the row titled ``title`` (those after it, up to the next row)."""
    out: list[dict[str, Any]] | None = None
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            if out is not None:
                break
            if panel["title"] == title:
                out = list(panel.get("panels", []))
        elif out is not None:
            out.append(panel)
    assert out is not None, f"no row {title!r}"
    return out


def test_the_github_row_shows_every_github_metric_by_its_labels() -> None:
    """Every fly_scaler_github_* family is on the GitHub row, broken down by the label an
    operator asks about (refusals by reason, deliveries by result, API calls by code)."""
    exported = exported_series_names()
    github = {family for family in exported.values() if family.startswith("fly_scaler_github_")}
    assert github, "the catalog exports no github metrics"
    row = _row_panels(dashboard(), "GitHub Actions runners")
    queries = [t["expr"] for p in row for t in p["targets"]]
    shown = {exported[n] for q in queries for n in METRIC_NAME.findall(q) if n in exported}
    assert github <= shown, f"github metrics off the GitHub row: {sorted(github - shown)}"
    by = {name: q for q in queries for name in METRIC_NAME.findall(q)}
    assert "by (reason)" in by["fly_scaler_github_jobs_refused_total"]
    assert "by (result)" in by["fly_scaler_github_webhook_deliveries_total"]
    assert "code" in by["fly_scaler_github_api_calls_total"]
