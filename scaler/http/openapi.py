"""The OpenAPI 3.1 document of the HTTP port, served at ``/v1/openapi.json``.

Its schemas are not written here: they are the JSON Schemas (2020-12, the dialect of OpenAPI 3.1)
of the pydantic models that validate the requests and produce the answers
(:mod:`scaler.http.enqueue`, :mod:`scaler.http.responses`). This module adds the routes, their
status codes and auth.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from scaler.http.enqueue import EnqueueRequest, MessageState
from scaler.http.responses import Error, InvalidRequest, Status

__all__ = ["REF_TEMPLATE", "openapi_document"]

REF_TEMPLATE = "#/components/schemas/{model}"

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (EnqueueRequest, "validation"),
    (MessageState, "serialization"),
    (Status, "serialization"),
    (Error, "serialization"),
    (InvalidRequest, "serialization"),
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": _ref(model)}}}
    if headers:
        out["headers"] = headers
    return out


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this HTTP API."""
    _, defs = models_json_schema(_MODELS, ref_template=REF_TEMPLATE)
    schemas = defs["$defs"]
    unauthorized = _json(Error, "No or malformed Authorization header.", {
        "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}})
    forbidden = _json(Error, "The bearer token matches no configured token.")
    unavailable = _json(Error, "Redis is unavailable; retry (with the same message_id).")
    return {
        "openapi": "3.1.0",
        "info": {"title": "fly-scaler HTTP API", "version": "1",
                 "description": "Enqueue dramatiq messages over HTTP, follow their state, and "
                                "read the scaler's health and metrics."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": {
            "/metrics": {"get": {
                "operationId": "metrics", "summary": "Prometheus metrics.", "security": [],
                "responses": {"200": {"description": "Prometheus text format.", "content": {
                    "text/plain": {"schema": {"type": "string"}}}}}}},
            "/healthz": {"get": {
                "operationId": "healthz", "summary": "The process is alive.", "security": [],
                "responses": {"200": _json(Status, "Alive.")}}},
            "/readyz": {"get": {
                "operationId": "readyz", "summary": "Ready to serve (a follower is ready).",
                "security": [], "responses": {"200": _json(Status, "Ready."),
                                              "503": _json(Status, "Not ready, with why.")}}},
            "/v1/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document.", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1.", "content": {
                    "application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/queues/{queue}/messages": {"post": {
                "operationId": "enqueue", "summary": "Enqueue a message on a queue.",
                "security": [{"bearer": []}],
                "parameters": [{"name": "queue", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref(EnqueueRequest)}}},
                "responses": {
                    "202": _json(MessageState, "Accepted: the message is in Redis.",
                                 {"Location": {"schema": {"type": "string"}}}),
                    "200": _json(MessageState, "This message_id was already enqueued with "
                                 "the same content; its current state (nothing written)."),
                    "400": _json(Error, "The body is not JSON, or Content-Length is bad."),
                    "401": unauthorized, "403": forbidden,
                    "404": _json(Error, "The queue does not accept HTTP messages."),
                    "409": _json(Error, "message_id already used for a different message."),
                    "413": _json(Error, "The body is larger than the configured limit."),
                    "422": _json(InvalidRequest, "Invalid body (each field with a fix), "
                                 "or an actor not allowed on the queue."),
                    "503": unavailable,
                }}},
            "/v1/messages/{message_id}": {"get": {
                "operationId": "getMessage", "summary": "Where a message is now.",
                "security": [{"bearer": []}],
                "parameters": [{"name": "message_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}],
                "responses": {
                    "200": _json(MessageState, "Its state."),
                    "401": unauthorized, "403": forbidden,
                    "404": _json(Error, "No such message: not sent over HTTP nor claimed by "
                                 "the scaler yet, or its record expired."),
                    "422": _json(InvalidRequest, "message_id is not a UUID."),
                    "503": unavailable,
                }}},
        },
    }
