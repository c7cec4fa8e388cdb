"""Fly's official Machines API OpenAPI document, as JSON Schemas we can validate against.

The spec (``spec/fly-machines-openapi.json``, byte-exact copy of docs.machines.dev/openapi.json) is
the wire contract. The client's tests check what we send against it, and the local Machines API
validates request bodies with it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator

__all__ = [
    "SpecValidationError",
    "load_spec",
    "operation",
    "request_schema_name",
    "response_schema_name",
    "schema",
    "validate",
    "validation_errors",
]

_REF = "#/components/schemas/"


class SpecValidationError(ValueError):
    """A body does not match its schema; ``errors`` name each offending field."""

    def __init__(self, schema_name: str, errors: list[str]) -> None:
        super().__init__(f"{schema_name}: " + "; ".join(errors))
        self.schema_name = schema_name
        self.errors = errors


@cache
def load_spec() -> dict[str, Any]:
    """The whole OpenAPI document (parsed once)."""
    text = resources.files("scaler.fly").joinpath("spec/fly-machines-openapi.json").read_text()
    spec: dict[str, Any] = json.loads(text)
    return spec


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(_REF):
                out[k] = "#/definitions/" + v[len(_REF):]
            elif k in ("example", "x-enum-varnames"):
                continue
            else:
                out[k] = _rewrite_refs(v)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


@cache
def _definitions() -> dict[str, Any]:
    defs: dict[str, Any] = _rewrite_refs(load_spec()["components"]["schemas"])
    return defs


@cache
def schema(name: str) -> dict[str, Any]:
    """A standalone JSON Schema for one ``components.schemas`` entry (refs resolved locally)."""
    defs = _definitions()
    if name not in defs:
        raise KeyError(f"no schema named {name!r} in the Fly spec")
    return {"$ref": f"#/definitions/{name}", "definitions": defs}


@cache
def operation(operation_id: str) -> tuple[str, str, dict[str, Any]]:
    """``(method, path, operation object)`` for an operationId such as ``Machines_create``."""
    for path, ops in load_spec()["paths"].items():
        for method, op in ops.items():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return method.upper(), path, op
    raise KeyError(f"no operation {operation_id!r} in the Fly spec")


def _ref_name(content: dict[str, Any] | None) -> str | None:
    if not content:
        return None
    sch = content.get("application/json", {}).get("schema", {})
    ref = sch.get("$ref") or sch.get("items", {}).get("$ref")
    return ref[len(_REF):] if isinstance(ref, str) and ref.startswith(_REF) else None


def request_schema_name(operation_id: str) -> str | None:
    """The schema name of an operation's JSON request body, if it has one."""
    return _ref_name(operation(operation_id)[2].get("requestBody", {}).get("content"))


def response_schema_name(operation_id: str, status: int | str) -> str | None:
    """The schema name of an operation's response for ``status`` (array items for lists)."""
    resp = operation(operation_id)[2].get("responses", {}).get(str(status), {})
    return _ref_name(resp.get("content"))


@cache
def _validator(name: str) -> Draft7Validator:
    return Draft7Validator(schema(name))


def validation_errors(instance: Any, schema_name: str) -> list[str]:
    """Every mismatch between ``instance`` and the schema, each as ``field.path: message``."""
    errors = []
    for err in sorted(_validator(schema_name).iter_errors(instance), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(body)"
        errors.append(f"{where}: {err.message}")
    return errors


def validate(instance: Any, schema_name: str) -> None:
    """Raise :class:`SpecValidationError` if ``instance`` does not match the named schema."""
    errors = validation_errors(instance, schema_name)
    if errors:
        raise SpecValidationError(schema_name, errors)
