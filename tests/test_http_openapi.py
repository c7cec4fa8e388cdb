"""The OpenAPI document is derived from the pydantic models that validate the enqueue request and
produce the answers: its schemas are the models' own JSON Schemas, every field and bound of the
request is in it, and the app (real Redis) enqueues a body the served document accepts and refuses
one it refuses with a 422 naming the field."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, get_args, get_origin

import annotated_types
import httpx
import jsonschema
import pytest
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from scaler.fly.sizing import PRESETS
from scaler.http.app import QueueInfo, create_http_app
from scaler.http.enqueue import MAX_DELAY_MS, EnqueueOptions, EnqueueRequest, MessageState
from scaler.http.openapi import REF_TEMPLATE, openapi_document
from scaler.http.responses import Error, InvalidRequest, Status
from scaler.jobs.enqueue import MACHINE_OPTION_KEYS
from scaler.secret import Secret
from scaler.telemetry.metrics import Metrics

TOKEN = "tok-openapi-5c1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

DOC = openapi_document()
SCHEMAS = DOC["components"]["schemas"]


def _validator(name: str, doc: dict[str, Any] = DOC) -> jsonschema.Draft202012Validator:
    """A validator for one schema of ``doc``, its references resolved in ``doc``."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _value_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A property's schema, without the ``null`` branch of an optional field."""
    values = [s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"]
    assert len(values) == 1, prop
    value: dict[str, Any] = values[0]
    return value


def _bounds(annotation: Any) -> dict[str, int]:
    """The ``ge``/``le`` bounds declared anywhere in a field's annotation."""
    found: dict[str, int] = {}
    if get_origin(annotation) is Annotated:
        for meta in get_args(annotation)[1:]:
            for item in meta.metadata if isinstance(meta, FieldInfo) else [meta]:
                if isinstance(item, annotated_types.Ge):
                    found["minimum"] = int(item.ge)  # type: ignore[call-overload]
                if isinstance(item, annotated_types.Le):
                    found["maximum"] = int(item.le)  # type: ignore[call-overload]
    for arg in get_args(annotation):
        found.update(_bounds(arg))
    return found


@pytest.mark.parametrize(("model", "mode"), [
    (EnqueueRequest, "validation"), (MessageState, "serialization"), (Status, "serialization"),
    (Error, "serialization"), (InvalidRequest, "serialization"),
])
def test_the_documents_schemas_are_the_models_own(model: type[BaseModel], mode: Any) -> None:
    own = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
    for name, schema in own.pop("$defs", {}).items():
        assert SCHEMAS[name] == schema
    assert SCHEMAS[model.__name__] == own


@pytest.mark.parametrize("model", [EnqueueRequest, EnqueueOptions])
def test_every_request_field_and_bound_is_in_the_document(model: type[BaseModel]) -> None:
    schema = SCHEMAS[model.__name__]
    assert list(schema["properties"]) == list(model.model_fields)
    assert set(schema.get("required", [])) == {
        name for name, f in model.model_fields.items() if f.is_required()}
    assert schema["additionalProperties"] is False
    for name, field in model.model_fields.items():
        value = _value_schema(schema["properties"][name])
        for key, bound in _bounds(field.annotation).items():
            assert value[key] == bound, (name, key)
    if model is EnqueueOptions:
        delay = _value_schema(schema["properties"]["delay_ms"])
        assert (delay["type"], delay["minimum"], delay["maximum"]) == ("integer", 0, MAX_DELAY_MS)


def test_machine_options_are_described_from_the_validators_keys_and_the_presets() -> None:
    machine = _value_schema(SCHEMAS["EnqueueOptions"]["properties"]["machine"])
    assert set(machine["properties"]) == MACHINE_OPTION_KEYS
    assert machine["properties"]["size"]["enum"] == [*PRESETS, None]
    assert machine["additionalProperties"] is False


MID = str(uuid.uuid4())
VALID = [
    {"actor": "work"},
    {"actor": "work", "args": [1, "a"], "kwargs": {"w": 2}, "message_id": MID,
     "options": {"delay_ms": 1000, "max_retries": 2, "time_limit_ms": 60_000,
                 "machine": {"size": "performance-2x", "region": "ord"}}},
    {"actor": "work", "message_id": None, "options": {"delay_ms": None, "max_retries": 3.0}},
    {"actor": "work", "options": {"machine": {"cpus": 2, "memory_mb": 1024, "cpu_kind": None}}},
]
INVALID = [
    ([], "(body)"),
    ({"args": []}, "actor"),
    ({"actor": 1}, "actor"),
    ({"actor": "work", "args": {"a": 1}}, "args"),
    ({"actor": "work", "kwargs": [1]}, "kwargs"),
    ({"actor": "work", "kwarg": {}}, "kwarg"),
    ({"actor": "work", "message_id": "not-a-uuid"}, "message_id"),
    ({"actor": "work", "options": None}, "options"),
    ({"actor": "work", "options": {"delay_ms": MAX_DELAY_MS + 1}}, "options.delay_ms"),
    ({"actor": "work", "options": {"delay_ms": -1}}, "options.delay_ms"),
    ({"actor": "work", "options": {"max_retries": "3"}}, "options.max_retries"),
    ({"actor": "work", "options": {"max_retries": True}}, "options.max_retries"),
    ({"actor": "work", "options": {"time_limit_ms": 1.5}}, "options.time_limit_ms"),
    ({"actor": "work", "options": {"time_limit_ms": 0}}, "options.time_limit_ms"),
    ({"actor": "work", "options": {"prio": 1}}, "options.prio"),
    ({"actor": "work", "options": {"machine": {"gpus": 1}}}, "options.machine.gpus"),
    ({"actor": "work", "options": {"machine": {"size": "huge"}}}, "options.machine.size"),
    ({"actor": "work", "options": {"machine": []}}, "options.machine"),
]


@pytest.fixture
async def api(redis_url: str, redis_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    redis = aioredis.Redis.from_url(redis_url)
    app = create_http_app(
        metrics=Metrics(), redis=redis, namespace=redis_prefix, prefix=redis_prefix,
        queues={"jobs": QueueInfo(frozenset({"work"}))}, tokens=[Secret(TOKEN)],
        ready=lambda: (True, "ok"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://scaler", headers=AUTH) as client:
        yield client
    await redis.aclose()


async def _served_request_schema(api: httpx.AsyncClient) -> jsonschema.Draft202012Validator:
    served = (await api.get("/v1/openapi.json")).json()
    assert served == DOC
    return _validator("EnqueueRequest", served)


@pytest.mark.parametrize("body", VALID)
async def test_a_body_the_served_document_accepts_is_enqueued(
    api: httpx.AsyncClient, body: Any
) -> None:
    (await _served_request_schema(api)).validate(body)
    r = await api.post("/v1/queues/jobs/messages", json=body)
    assert r.status_code == 202, r.text
    _validator("MessageState", DOC).validate(r.json())


@pytest.mark.parametrize(("body", "field"), INVALID)
async def test_a_body_the_served_document_refuses_is_a_422_naming_the_field(
    api: httpx.AsyncClient, redis_client: redis.Redis, redis_prefix: str, body: Any, field: str
) -> None:
    assert not (await _served_request_schema(api)).is_valid(body)
    r = await api.post("/v1/queues/jobs/messages", json=body)
    assert r.status_code == 422, r.text
    _validator("InvalidRequest", DOC).validate(r.json())
    [error] = r.json()["errors"]
    assert error["field"] == field and error["message"] and error["fix"]
    assert not list(redis_client.scan_iter(match=f"{redis_prefix}*"))


async def test_bounds_in_the_wording_are_the_documents(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/queues/jobs/messages",
                       json={"actor": "work", "options": {"delay_ms": -1}})
    [error] = r.json()["errors"]
    assert error["message"] == f"must be an integer from 0 to {MAX_DELAY_MS}, got -1"
    assert error["fix"].startswith(f"set options.delay_ms to an integer from 0 to {MAX_DELAY_MS}")


def test_the_documents_own_examples_are_valid() -> None:
    request = _validator("EnqueueRequest")
    for example in SCHEMAS["EnqueueRequest"]["examples"]:
        request.validate(example)
        EnqueueRequest.model_validate(example)
    for name, prop in SCHEMAS["EnqueueRequest"]["properties"].items():
        for example in prop.get("examples", []):
            EnqueueRequest.model_validate({"actor": "work", name: example})
