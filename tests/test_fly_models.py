"""Wire models against the official spec and Fly's documented example bodies."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from scaler.fly import _operations as ops
from scaler.fly import errors, spec
from scaler.fly import models as m

EXAMPLES = Path(__file__).parent / "data" / "fly-examples"


def _load(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


# --- documented responses parse -------------------------------------------------------------------

_PARSERS: dict[str, Callable[[Any], Any]] = {
    "apps-create": m.CreateAppResponse.model_validate,
    "apps-get": m.App.model_validate,
    "apps-list": m.ListAppsResponse.model_validate,
    "lease-create": m.parse_lease,
    "lease-get": m.parse_lease,
    "lease-release": m.FlyModel.model_validate,
    "machines-create": m.Machine.model_validate,
    "machines-get": m.Machine.model_validate,
    "machines-update": m.Machine.model_validate,
    "machines-list": ops.list_machines("app").parse,
    "machines-launch": m.Machine.model_validate,
    "machines-launch-syd": m.Machine.model_validate,
    "machines-create-with-services": m.Machine.model_validate,
    "machines-metadata-get": ops.get_metadata("app", "m1").parse,
    "machines-start": m.StartResponse.model_validate,
    "machines-stop": m.OkResponse.model_validate,
    "machines-suspend": m.OkResponse.model_validate,
    "machines-uncordon": m.OkResponse.model_validate,
    "machines-delete": m.OkResponse.model_validate,
    "machines-wait": m.WaitResponse.model_validate,
    "volumes-create": m.Volume.model_validate,
    "volumes-create-from-snapshot": m.Volume.model_validate,
    "volumes-get": m.Volume.model_validate,
    "volumes-update": m.Volume.model_validate,
    "volumes-delete": m.Volume.model_validate,
    "volumes-extend": m.ExtendVolumeResponse.model_validate,
    "volumes-list": ops.list_volumes("app").parse,
    "volumes-snapshots-list": ops.list_snapshots("app", "vol_1").parse,
    "volumes-snapshots-create": m.FlyModel.model_validate,
}


def _responses() -> list[Path]:
    return sorted(
        p for p in EXAMPLES.rglob("*.response*.json")
        if not p.name.startswith("apps-delete") and ".409." not in p.name
    )


@pytest.mark.parametrize("path", _responses(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_documented_response_parses(path: Path) -> None:
    key = path.name.split(".response")[0]
    assert key in _PARSERS, f"no model mapped for {path.name}"
    parsed = _PARSERS[key](_load(str(path.relative_to(EXAMPLES))))
    assert parsed is not None


@pytest.mark.parametrize(
    ("name", "status", "cls", "text"),
    [
        ("legacy/lease-create.response.409.json", 409, errors.Conflict, "lease currently held"),
        ("legacy/apps-delete.response.404.json", 404, errors.NotFound, "Could not find App"),
        ("legacy/apps-delete.response.error.json", 404, errors.NotFound, "Could not find App"),
    ],
)
def test_documented_error_bodies_map_to_errors(
    name: str, status: int, cls: type[errors.FlyAPIError], text: str
) -> None:
    exc = errors.api_error(status, _load(name), action="X")
    assert type(exc) is cls
    assert exc.error is not None and text in exc.error


def test_machine_example_fields_are_typed() -> None:
    machine = m.Machine.model_validate(_load("machines-create.response.json"))
    assert machine.id == "1857156b526dd8" and machine.state == "created"
    assert machine.config is not None and machine.config.guest == m.Guest(
        cpu_kind="shared", cpus=1, memory_mb=256
    )
    assert machine.config.restart is not None and machine.config.restart.policy == "always"
    assert machine.config.init is not None and machine.config.init.exec == ["/bin/sleep", "inf"]
    assert machine.image_ref is not None and machine.image_ref.tag == "latest"
    event = (machine.events or [])[0]
    assert event.timestamp == 1699408350300
    assert event.time is not None and event.time.year == 2023


def test_exit_event_in_the_fly_go_shape() -> None:
    machine = m.Machine.model_validate(_load("legacy/machines-get.response.stopped.json"))
    exit_event = (machine.events or [])[0]
    assert exit_event.type == "exit"
    assert exit_event.request is not None and exit_event.request.exit_event is not None
    assert exit_event.request.exit_event.exit_code == 127
    assert exit_event.request.restart_count == 0


def test_exit_time_as_ms_or_rfc3339() -> None:
    for exited_at in (1653047897299, "2022-05-20T11:58:17.299Z"):
        event = m.MachineEvent.model_validate(
            {"type": "exit", "request": {"exit_event": {"exit_code": 0, "exited_at": exited_at}}}
        )
        assert event.request is not None and event.request.exit_event is not None
        assert event.request.exit_event.exited_at == exited_at


def test_nulls_and_blank_enums_from_fly_are_accepted() -> None:
    machine = m.Machine.model_validate(_load("machines-update.response.json"))
    assert machine.config is not None
    assert machine.config.env is None
    assert machine.config.restart == m.Restart(policy="")
    assert machine.config.guest is not None and machine.config.guest.cpu_kind == ""


def test_unknown_fields_are_kept_and_sent_back() -> None:
    body = {
        "id": "abc",
        "brand_new": {"x": 1},
        "config": {"image": "nginx", "future_knob": True, "guest": {"cpus": 1, "gpu_arch": "z"}},
    }
    machine = m.Machine.model_validate(body)
    assert machine.model_extra == {"brand_new": {"x": 1}}
    assert machine.config is not None
    wire = machine.config.to_wire()
    assert wire["future_knob"] is True
    assert wire["guest"]["gpu_arch"] == "z"


def test_to_wire_leaves_out_unset_fields() -> None:
    wire = m.FlyMachineConfig(image="nginx", guest=m.Guest(cpus=2)).to_wire()
    assert wire == {"image": "nginx", "guest": {"cpus": 2}}


def test_lease_is_read_from_the_envelope_and_flat() -> None:
    envelope = m.parse_lease(_load("lease-create.response.json"))
    flat = m.parse_lease({"nonce": "5c35f65c9f95", "expires_at": 1708569778, "owner": "o"})
    assert envelope.nonce == flat.nonce == "5c35f65c9f95"
    assert envelope.expires_at == 1708569778
    assert envelope.version == "01HQ73A7BFFDF1B6WMGHFZZ4E7"


def test_regions_key_in_either_case() -> None:
    row = {"code": "iad", "name": "Ashburn, Virginia (US)"}
    assert m.RegionsResponse.model_validate({"regions": [row]}).regions[0].code == "iad"
    assert m.RegionsResponse.model_validate({"Regions": [row]}).regions[0].code == "iad"


def test_create_app_accepts_the_legacy_app_name() -> None:
    legacy = m.CreateAppRequest.model_validate(_load("legacy/apps-create.request.json"))
    assert legacy.name == "my-app-name"
    assert "app_name" not in legacy.to_wire()


@pytest.mark.parametrize(
    ("raw", "expected"), [(True, "stop"), (False, "off"), ("suspend", "suspend"), ("off", "off")]
)
def test_autostop_bool_or_string(raw: object, expected: str) -> None:
    assert m.MachineService.model_validate({"autostop": raw}).autostop == expected


def test_stop_config_signal_number_and_nanosecond_timeout() -> None:
    stop = m.StopConfig.model_validate({"signal": 15, "timeout": 5_000_000_000})
    assert stop.signal == "SIGTERM"
    assert stop.timeout == "5000000000ns"


@pytest.mark.parametrize(
    ("sig", "name"), [(9, "SIGKILL"), ("SIGUSR1", "SIGUSR1"), ("term", "SIGTERM")]
)
def test_signal_names(sig: str | int, name: str) -> None:
    assert m.signal_name(sig) == name


def test_signal_name_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="signal=999"):
        m.signal_name(999)


# --- request models vs the spec ------------------------------------------------------------------

_SCHEMAS = spec.load_spec()["components"]["schemas"]


def _ref(prop: dict[str, Any]) -> str | None:
    for node in (prop, *prop.get("allOf", []), prop.get("items", {}),
                 prop.get("additionalProperties") or {}):
        if isinstance(node, dict) and "$ref" in node:
            return str(node["$ref"]).rsplit("/", 1)[-1]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _unknown_fields(model: type[BaseModel], schema_name: str, where: str) -> list[str]:
    props = _SCHEMAS[schema_name].get("properties", {})
    problems = []
    for name, info in model.model_fields.items():
        wire = info.alias or name
        if wire not in props:
            problems.append(f"{where}.{wire} not in {schema_name}")
            continue
        nested = _model_in(info.annotation)
        ref = _ref(props[wire])
        if nested is not None and ref is not None:
            problems += _unknown_fields(nested, ref, f"{where}.{wire}")
        elif nested is not None and props[wire].get("type") != "object":
            problems.append(f"{where}.{wire} is a model but the spec has no object there")
    return problems


@pytest.mark.parametrize(
    ("model", "schema_name"),
    [
        (m.CreateMachineRequest, "CreateMachineRequest"),
        (m.UpdateMachineRequest, "UpdateMachineRequest"),
        (m.StopRequest, "StopRequest"),
        (m.SignalRequest, "SignalRequest"),
        (m.CreateLeaseRequest, "CreateLeaseRequest"),
        (m.UpdateMetadataRequest, "updateMetadataRequest"),
        (m.UpsertMetadataKeyRequest, "upsertMetadataKeyRequest"),
        (m.CreateAppRequest, "CreateAppRequest"),
        (m.CreateVolumeRequest, "CreateVolumeRequest"),
        (m.UpdateVolumeRequest, "UpdateVolumeRequest"),
        (m.ExtendVolumeRequest, "ExtendVolumeRequest"),
    ],
)
def test_every_request_field_exists_in_the_spec(model: type[BaseModel], schema_name: str) -> None:
    assert _unknown_fields(model, schema_name, model.__name__) == []


def test_the_field_walk_notices_a_field_the_spec_lacks() -> None:
    class Bogus(m.FlyModel):
        image: str | None = None
        not_in_fly: int | None = None

    class Outer(m.FlyModel):
        config: Bogus

    assert _unknown_fields(Outer, "CreateMachineRequest", "Outer") == [
        "Outer.config.not_in_fly not in fly.MachineConfig"
    ]


def rich_config() -> m.FlyMachineConfig:
    """A config touching every part of FlyMachineConfig the scaler may send."""
    return m.FlyMachineConfig(
        image="registry.fly.io/worker:1",
        env={"QUEUE": "default"},
        guest=m.Guest(cpu_kind="performance", cpus=2, memory_mb=4096),
        init=m.MachineInit(cmd=["python", "-m", "workers.runner"], entrypoint=["/bin/sh", "-c"],
                           tty=False, swap_size_mb=512),
        services=[
            m.MachineService(
                protocol="tcp", internal_port=8080, autostart=True, autostop="suspend",
                min_machines_running=0,
                ports=[
                    m.MachinePort(port=80, handlers=["http"], force_https=True,
                                  http_options=m.HTTPOptions(compress=True, h2_backend=False)),
                    m.MachinePort(port=443, handlers=["http", "tls"],
                                  tls_options=m.TLSOptions(alpn=["h2", "http/1.1"])),
                ],
                concurrency=m.ServiceConcurrency(type="requests", soft_limit=20, hard_limit=25),
                checks=[m.MachineServiceCheck(type="http", port=8080, path="/healthz",
                                              interval="15s", timeout="2s", method="GET")],
            )
        ],
        checks={"alive": m.MachineCheck(type="tcp", port=8080, interval="15s", timeout="10s",
                                        kind="readiness")},
        mounts=[m.Mount(volume="vol_123", path="/data", extend_threshold_percent=80,
                        add_size_gb=1, size_gb_limit=10)],
        restart=m.Restart(policy="on-failure", max_retries=3),
        auto_destroy=True,
        metadata={"fly_scaler_pool": "ci", "fly_scaler_job": "j-1"},
        stop_config=m.StopConfig(signal="SIGTERM", timeout="30s"),
        files=[m.File(guest_path="/etc/hello", raw_value="aGVsbG8K", mode=0o644)],
        processes=[m.MachineProcess(cmd=["sidecar"], env={"A": "1"})],
        schedule="daily",
        dns=m.DNSConfig(skip_registration=True),
        metrics=m.MachineMetrics(port=9091, path="/metrics"),
        statics=[m.Static(guest_path="/app/public", url_prefix="/static")],
        rootfs=m.Rootfs(persist="restart", size_gb=5),
    )


def _bodies() -> list[tuple[str, Any, str]]:
    rich = rich_config()
    cases: list[tuple[str, Any, str]] = [
        ("create", ops.create_machine("app", rich, name="job-1", region="iad", skip_launch=False,
                                      lease_ttl=30, skip_service_registration=True).body,
         "CreateMachineRequest"),
        ("update", ops.update_machine("app", "m1", rich, current_version="01HX",
                                      skip_launch=True).body, "UpdateMachineRequest"),
        ("stop", ops.stop_machine("app", "m1", signal=15, timeout=30).body, "StopRequest"),
        ("signal", ops.signal_machine("app", "m1", 9).body, "SignalRequest"),
        ("lease", ops.acquire_lease("app", "m1", ttl=30, description="scaler").body,
         "CreateLeaseRequest"),
        ("app", ops.create_app("my-app", "personal", network="n1").body, "CreateAppRequest"),
        ("volume", ops.create_volume("app", "data", region="iad", size_gb=10,
                                     encrypted=True).body, "CreateVolumeRequest"),
        ("volume-update", ops.update_volume("app", "vol_1", snapshot_retention=10).body,
         "UpdateVolumeRequest"),
        ("extend", ops.extend_volume("app", "vol_1", 20).body, "ExtendVolumeRequest"),
        ("metadata", ops.update_metadata("app", "m1", {"a": "b"}, machine_version="01HX").body,
         "updateMetadataRequest"),
        ("metadata-key", ops.set_metadata_key("app", "m1", "a", "b").body,
         "upsertMetadataKeyRequest"),
    ]
    return cases


@pytest.mark.parametrize(("label", "body", "schema_name"), _bodies(), ids=lambda v: str(v)[:20])
def test_serialized_requests_pass_the_spec(label: str, body: Any, schema_name: str) -> None:
    assert spec.validation_errors(body, schema_name) == []


def test_the_rich_create_body_carries_everything() -> None:
    body = ops.create_machine("app", rich_config(), name="job-1").body
    config = body["config"]
    assert set(config) >= {"image", "env", "guest", "init", "services", "checks", "mounts",
                           "restart", "auto_destroy", "metadata", "stop_config", "files",
                           "processes", "schedule", "dns", "metrics", "statics", "rootfs"}
    assert config["services"][0]["autostop"] == "suspend"
    assert "None" not in json.dumps(body) and "null" not in json.dumps(body)


@pytest.mark.parametrize(
    "name",
    ["machines-create.request.json", "machines-create-with-services.request.json",
     "machines-update.request.json", "guides/machines-create.request.mounts.json",
     "guides/machines-create.request.services-autostop.json",
     "legacy/machines-launch-syd.request.json"],
)
def test_documented_create_bodies_round_trip(name: str) -> None:
    body = _load(name)
    request = m.CreateMachineRequest.model_validate(body)
    assert request.to_wire() == body
    assert spec.validation_errors(request.to_wire(), "CreateMachineRequest") == []
