"""A request's JSON body: read under a size limit, then validated by a pydantic model.

Each problem pydantic finds becomes a :class:`~scaler.http.responses.FieldError` worded from the
error's location and the model's own JSON Schema (the one the OpenAPI document serves): the field's
dotted path, what it must be (``an integer from 0 to 604800000``), the value given, and a fix. A
validator that knows better words its own problem with :func:`refusal`.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError
from starlette.requests import Request

from scaler.http.responses import FieldError, Problem

__all__ = ["parse", "read_json", "refusal"]

M = TypeVar("M", bound=BaseModel)

_KINDS = {"array": "an array", "object": "an object", "boolean": "true or false",
          "number": "a number", "string": "a string", "integer": "an integer"}


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (413) whether or not it says so up
    front: Content-Length first, then the bytes counted as they arrive."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Problem(413, "too_large", f"the body is over {limit} bytes; send less")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "too_large", f"the body is over {limit} bytes; send less")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, refusing more than ``limit`` bytes whether or not it says so up front."""
    body = await read_body(request, limit)
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "invalid_json", "the body is not valid JSON (UTF-8, no NaN, not "
                      "nested too deeply); send a JSON object") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def refusal(reason: str, fix: str, field: str | None = None) -> PydanticCustomError:
    """An error for a validator to raise that carries its own wording: ``reason`` is the message,
    ``fix`` what to send instead, ``field`` a more precise path than pydantic's location."""
    context: dict[str, Any] = {"reason": reason, "fix": fix}
    if field is not None:
        context["field"] = field
    return PydanticCustomError("refused", "{reason}", context)


def parse(model: type[M], data: Any, *, context: Any = None,
          fixes: Mapping[str, str] | None = None) -> M:
    """``data`` validated by ``model`` (``context`` is passed to its validators), or a 422
    :class:`Problem` listing every problem; ``fixes`` replaces the fix of the fields it names."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        errors = [_word(error, _schema(model), fixes or {})
                  for error in exc.errors(include_url=False)]
        raise Problem(422, "invalid_request", f"{len(errors)} problem(s) in the request body",
                      errors=errors) from None


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _word(error: ErrorDetails, root: dict[str, Any], fixes: Mapping[str, str]) -> FieldError:
    loc = tuple(error["loc"])
    path = ".".join(str(part) for part in loc) or "(body)"
    context = error.get("ctx") or {}
    if "fix" in context:
        return FieldError(field=str(context.get("field", path)), message=error["msg"],
                          fix=str(context["fix"]))
    parent = _at(root, loc[:-1])
    if error["type"] == "extra_forbidden":
        allowed = list(parent.get("properties", {}))
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return FieldError(field=path, message="unknown field",
                          fix=f"{hint}remove it; allowed: {', '.join(allowed)}")
    here = _at(root, loc)
    expected = _expected(here)
    if error["type"] == "missing":
        message = f"required: {expected}"
    else:
        message = f"must be {expected}, got {_shown(error['input'])}"
    fix = fixes.get(path)
    if fix is None:
        examples = here.get("examples")
        example = f", e.g. {json.dumps(examples[0])}" if examples else ""
        optional = bool(loc) and loc[-1] not in parent.get("required", ())
        fix = (f"set {path} to {expected}{example}" if loc else f"send {expected}{example}") + (
            ", or leave it out" if optional else "")
    return FieldError(field=path, message=message, fix=fix)


def _at(root: dict[str, Any], loc: tuple[int | str, ...]) -> dict[str, Any]:
    """The JSON Schema of the value at ``loc`` (``{}`` when the schema does not say)."""
    node = _resolved(root, root)
    for part in loc:
        child = node.get("items") if isinstance(part, int) else node.get(
            "properties", {}).get(part)
        node = _resolved(root, child or {})
    return node


def _resolved(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` followed and a nullable ``anyOf`` reduced to its value."""
    while True:
        if "$ref" in node:
            outer = {k: v for k, v in node.items() if k != "$ref"}
            node = {**root["$defs"][node["$ref"].rsplit("/", 1)[-1]], **outer}
            continue
        values = [s for s in node.get("anyOf", ()) if s.get("type") != "null"]
        if len(values) != 1:
            return node
        node = {**{k: v for k, v in node.items() if k != "anyOf"}, **values[0]}


def _expected(schema: Mapping[str, Any]) -> str:
    """What a value of ``schema`` is, in words."""
    if "enum" in schema:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind == "integer" and low is not None:
        return f"an integer from {low} to {high}" if high is not None else (
            f"an integer of at least {low}")
    if kind == "string" and schema.get("format") == "uuid":
        return "a UUID string"
    return _KINDS.get(str(kind), "a valid value")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
