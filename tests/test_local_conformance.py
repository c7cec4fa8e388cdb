"""Conformance of the local Machines API with Fly's official OpenAPI spec, by schemathesis.

Every apps, machines, volumes and regions operation the server implements gets generated
requests (a bounded number each) against fresh objects; checks: no 5xx, documented content type,
documented status codes (the spec's, plus the error codes Fly really answers, see
BEHAVIOUR.md), and bodies that match the documented response schemas. Deliberate deviations are
excluded by operation name below, each with its reason.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.config import SchemathesisConfig

from scaler.fly.spec import load_spec, operation
from scaler.local import LocalAPIServer
from scaler.local.app import HANDLERS

IMPLEMENTED = sorted(HANDLERS)
# The lease endpoints answer Fly's real envelope {"status","data"} instead of the spec's flat
# Lease (docs/fly-behaviour.md, "Leases"): excluded from the response-schema check only.
RESPONSE_SCHEMA_DEVIATIONS = {"Machines_show_lease", "Machines_create_lease"}
# Error codes Fly answers although the spec does not list them (docs/fly-behaviour.md, "Status
# codes"); any operation may also answer 401 (auth), 404 (unknown app/machine/volume) and 429
# (rate limit).
ALWAYS = {400, 401, 404, 429}
EXTRA_STATUS: dict[str, set[int]] = {
    "Apps_delete": {412},
    "Machines_create": {409, 412},
    "Machines_update": {409, 412},
    "Machines_delete": {412},
    "Machines_start": {409, 412},
    "Machines_stop": {409, 412},
    "Machines_restart": {409, 412},
    "Machines_suspend": {409, 412},
    "Machines_signal": {409, 412},
    "Machines_cordon": {409},
    "Machines_uncordon": {409},
    "Machines_wait": {408},
    "Machines_update_metadata": {409},
    "Machines_upsert_metadata": {409},
    "Machines_delete_metadata": {409},
    "Machines_create_lease": {409, 412},
    "Machines_release_lease": {409},
    "Volumes_create": {412},
    "Volume_delete": {412},
}


def _spec() -> dict[str, Any]:
    raw = copy.deepcopy(load_spec())
    raw["servers"] = [{"url": "http://127.0.0.1"}]
    return raw


# Fuzzing only, positive data: the coverage phase enumerates every field of MachineConfig
# (minutes), and negative data is covered by the validation tests in test_local_api.py.
_CONFIG = SchemathesisConfig.from_dict(
    {"phases": {"coverage": {"enabled": False}, "examples": {"enabled": False}},
     "generation": {"mode": "positive"}}
)
schema = schemathesis.openapi.from_dict(_spec(), config=_CONFIG).include(
    operation_id=IMPLEMENTED
)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalAPIServer]:
    api = LocalAPIServer(runtime="sim", timings="fast", rate_limits="off")
    yield api
    api.close()


def _fixtures(api: LocalAPIServer) -> dict[str, str]:
    """A fresh app with a started machine and a volume, so requests reach real objects."""
    with api.client() as c:
        app = f"conf-{uuid.uuid4().hex[:10]}"
        c.post("/v1/apps", json={"name": app, "org_slug": "personal"})
        machine = c.post(f"/v1/apps/{app}/machines",
                         json={"config": {"image": "x", "metadata": {"k": "v"}}}).json()
        volume = c.post(f"/v1/apps/{app}/volumes", json={"name": "data"}).json()
    return {"app_name": app, "machine_id": machine["id"], "volume_id": volume["id"]}


def documented_status(ctx: Any, response: Any, case: Any) -> bool | None:
    """The status is one the spec documents for the operation, or one Fly really answers."""
    op_id = case.operation.definition.raw.get("operationId", "")
    documented = {int(s) for s in case.operation.definition.raw.get("responses", {})
                  if s.isdigit()}
    allowed = documented | ALWAYS | EXTRA_STATUS.get(op_id, set())
    if case.method.upper() != case.operation.method.upper():
        allowed = {405}  # schemathesis probes methods the path does not have
    assert response.status_code in allowed, (
        f"{op_id}: status {response.status_code} not in {sorted(allowed)}"
    )
    return None


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_conforms_to_the_official_spec(case: Any, server: LocalAPIServer) -> None:
    op_id = case.operation.definition.raw.get("operationId", "")
    objects = _fixtures(server)
    for name in list(case.path_parameters or {}):
        if name in objects:
            case.path_parameters[name] = objects[name]
    if op_id == "Machines_wait" and case.query:
        case.query["timeout"] = 1  # keep 408s fast; the range check is tested elsewhere
    checks = [not_a_server_error, content_type_conformance, documented_status]
    if op_id not in RESPONSE_SCHEMA_DEVIATIONS:
        checks.append(response_schema_conformance)
    case.call_and_validate(
        base_url=server.url, headers=server.headers, checks=checks, timeout=10
    )


def test_lease_deviation_is_the_documented_envelope(server: LocalAPIServer) -> None:
    objects = _fixtures(server)
    with server.client() as c:
        r = c.post(f"/v1/apps/{objects['app_name']}/machines/{objects['machine_id']}/lease")
        assert r.status_code == 201
        assert set(r.json()) == {"status", "data"}
        assert set(r.json()["data"]) == {"nonce", "expires_at", "owner", "description", "version"}


def test_every_app_machine_volume_operation_is_implemented_or_501(
    server: LocalAPIServer,
) -> None:
    spec = load_spec()
    ops = {op["operationId"] for path, methods in spec["paths"].items()
           for op in methods.values() if isinstance(op, dict) and "operationId" in op
           if path.startswith("/v1/apps/{app_name}/machines") or path.startswith(
               "/v1/apps/{app_name}/volumes") or path in ("/v1/apps", "/v1/apps/{app_name}")}
    missing = ops - set(HANDLERS)
    assert missing == {"Machines_exec", "Machines_list_processes", "Machines_get_memory",
                       "Machines_set_memory_limit", "Machines_reclaim_memory"}
    objects = _fixtures(server)
    with server.client() as c:
        for op in sorted(missing):
            method, path, _ = operation(op)
            r = c.request(method, path.format(**objects), json={})
            assert r.status_code == 501, (op, r.status_code, r.text)


def test_spec_client_sanity(server: LocalAPIServer) -> None:
    r = httpx.get(server.url + "/v1/platform/regions", headers=server.headers)
    assert r.status_code == 200


def test_generated_requests_reached_real_objects(server: LocalAPIServer) -> None:
    """The fuzzing above exercised success paths, not only 4xx (runs after it, same server)."""
    ok = {op for (op, status), n in server.state.requests.items() if 200 <= status < 300}
    missing = {"Machines_show", "Machines_list", "Machines_stop",
               "Machines_start", "Machines_delete", "Machines_wait", "Volumes_create",
               "Apps_show", "Machines_show_metadata", "Machines_list_events"} - ok
    assert not missing
