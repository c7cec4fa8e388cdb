"""The scaler's HTTP port: metrics, health, and the enqueue API for apps not written in Python.

Endpoints (:func:`create_http_app`; the OpenAPI document at ``GET /v1/openapi.json`` is the
reference, built by :func:`openapi_document`):

- ``GET /metrics``: Prometheus text. ``GET /healthz``: 200 while the process serves.
  ``GET /readyz``: 200 or 503 with the reason given by the ``ready`` callback.
- ``POST /v1/queues/{queue}/messages``: enqueue a dramatiq message (see :mod:`scaler.jobs.messages`
  for exactly what is written). 202 when written; 200 when ``message_id`` was already used for
  the same message (idempotent retry, nothing written); 409 when it was used for a different one.
- ``GET /v1/messages/{message_id}``: where the message is now (queued, claimed, running, done,
  dead_lettered).

Errors are JSON ``{"error": code, "message": sentence}``; a 422 adds ``"errors": [{"field",
"message", "fix"}]``, one per problem. Auth on ``/v1/queues`` and ``/v1/messages``:
``Authorization: Bearer <token>``; no or malformed header -> 401 (with ``WWW-Authenticate``), a
token that matches none of the configured ones -> 403. A body over ``max_body_bytes`` -> 413
(Content-Length is checked first, then the bytes are counted as they arrive, so a chunked body
cannot slip past). A body that is not JSON -> 400; JSON of the wrong shape -> 422. Redis
unavailable -> 503: the write may or may not have happened, so retry with the same
``message_id`` (always send one when retrying matters).
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaler.jobs.enqueue import validate_machine_options
from scaler.jobs.messages import STATES, MessageStore, build_message
from scaler.secret import Secret
from scaler.telemetry.metrics import Metrics

__all__ = ["MAX_DELAY_MS", "QueueInfo", "create_http_app", "openapi_document"]

log = structlog.get_logger(__name__)

MAX_DELAY_MS = 7 * 24 * 3600 * 1000  # dramatiq refuses longer delays
MAX_INT = 2**31 - 1
_QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")
_BODY_FIELDS = ("actor", "args", "kwargs", "options", "message_id")
_OPTION_FIELDS = ("delay_ms", "machine", "max_retries", "time_limit_ms")


@dataclass(frozen=True)
class QueueInfo:
    """A queue that accepts HTTP messages, and the actor names allowed on it."""

    actors: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actors", frozenset(self.actors))


class _Problem(Exception):
    """An error response; raised by request handling, rendered by :func:`_guard`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors, self.headers = errors, headers

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _issue(path: str, message: str, fix: str) -> dict[str, str]:
    return {"field": path, "message": message, "fix": fix}


def _unknown_keys(data: Mapping[str, Any], allowed: Sequence[str], at: str) -> list[dict[str, str]]:
    issues = []
    for key in sorted(set(data) - set(allowed)):
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        issues.append(_issue(
            f"{at}{key}", "unknown field", f"{hint}remove it; allowed: {', '.join(allowed)}",
        ))
    return issues


def _integer(value: Any, path: str, low: int, high: int, what: str) -> tuple[int | None, list[
        dict[str, str]]]:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None, [_issue(path, f"must be an integer from {low} to {high}, got {value!r}",
                             f"set {path} to {what}")]
    return value, []


@dataclass(frozen=True)
class _EnqueueRequest:
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]  # dramatiq message options
    delay_ms: int | None
    message_id: str | None
    digest: str


def _parse_enqueue(data: Any, queue: str, info: QueueInfo) -> _EnqueueRequest:
    """Validate an enqueue body; raise a 422 listing every problem."""
    if not isinstance(data, dict):
        raise _Problem(422, "invalid_request", "the body must be a JSON object", errors=[_issue(
            "(body)", f"expected an object, got {type(data).__name__}",
            'send {"actor": "<name>", "args": [], "kwargs": {}}')])
    issues = _unknown_keys(data, _BODY_FIELDS, "")
    actor = data.get("actor")
    allowed = ", ".join(sorted(info.actors)) or "(none configured)"
    if not isinstance(actor, str):
        issues.append(_issue("actor", "required string" if actor is None else
                             f"must be a string, got {type(actor).__name__}",
                             f"set actor to one of: {allowed}"))
    elif actor not in info.actors:
        issues.append(_issue("actor", f"actor {actor!r} is not allowed on queue {queue!r}",
                             f"use one of: {allowed}"))
    args = data.get("args", [])
    if not isinstance(args, list):
        issues.append(_issue("args", "must be an array", 'send positional arguments as [1, "a"]'))
    kwargs = data.get("kwargs", {})
    if not isinstance(kwargs, dict):
        issues.append(_issue("kwargs", "must be an object", 'send keyword arguments as {"k": 1}'))
    message_id = data.get("message_id")
    if "message_id" in data:
        try:
            message_id = str(uuid.UUID(message_id)) if isinstance(message_id, str) else None
        except ValueError:
            message_id = None
        if message_id is None:
            issues.append(_issue("message_id", "must be a UUID string",
                                 "send a UUID such as 0b5f1c2e-7a3d-4c1e-9f00-2d3c4b5a6e7f, or "
                                 "omit it"))
    options, delay_ms, option_issues = _parse_options(data.get("options", {}))
    issues += option_issues
    if issues:
        raise _Problem(422, "invalid_request", f"{len(issues)} problem(s) in the request body",
                       errors=issues)
    assert isinstance(actor, str) and isinstance(args, list) and isinstance(kwargs, dict)
    canonical = json.dumps(
        {"queue": queue, "actor": actor, "args": args, "kwargs": kwargs, "options": options,
         "delay_ms": delay_ms}, sort_keys=True, separators=(",", ":"))
    return _EnqueueRequest(actor, args, kwargs, options, delay_ms, message_id,
                           hashlib.sha256(canonical.encode()).hexdigest())


def _parse_options(raw: Any) -> tuple[dict[str, Any], int | None, list[dict[str, str]]]:
    if not isinstance(raw, dict):
        return {}, None, [_issue("options", "must be an object",
                                 'send {"delay_ms": 1000} or omit options')]
    issues = _unknown_keys(raw, _OPTION_FIELDS, "options.")
    options: dict[str, Any] = {}
    delay_ms = None
    if "delay_ms" in raw:
        delay_ms, found = _integer(raw["delay_ms"], "options.delay_ms", 0, MAX_DELAY_MS,
                                   "the delay in milliseconds (at most 7 days)")
        issues += found
    if "max_retries" in raw:
        options["max_retries"], found = _integer(raw["max_retries"], "options.max_retries", 0,
                                                 MAX_INT, "how many times to retry on failure")
        issues += found
    if "time_limit_ms" in raw:
        options["time_limit"], found = _integer(raw["time_limit_ms"], "options.time_limit_ms", 1,
                                                MAX_INT, "the run time limit in milliseconds")
        issues += found
    if "machine" in raw:
        try:
            options["fly_machine"] = validate_machine_options(
                raw["machine"], field="options.machine")
        except ValueError as exc:
            path = str(getattr(exc, "field", "options.machine"))
            allowed = getattr(exc, "allowed", None)
            fix = f"allowed: {allowed}" if allowed else "see the machine schema in the OpenAPI"
            issues.append(_issue(path, str(exc), fix))
    return options, delay_ms, issues


async def _read_json(request: Request, limit: int) -> Any:
    """The JSON body, refusing more than ``limit`` bytes whether or not it says so up front."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _Problem(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise _Problem(413, "too_large", f"the body is over {limit} bytes; send less")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Problem(413, "too_large", f"the body is over {limit} bytes; send less")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise _Problem(400, "invalid_json", "the body is not valid JSON (UTF-8, no NaN, not "
                       "nested too deeply); send a JSON object") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Auth:
    """Bearer tokens, compared in constant time against every configured token."""

    def __init__(self, tokens: Sequence[Secret]) -> None:
        self._tokens = [t.get_secret_value().encode() for t in tokens if t]

    def check(self, request: Request) -> None:
        header = request.headers.get("authorization")
        scheme, _, value = (header or "").partition(" ")
        given = value.strip().encode()
        if scheme.lower() != "bearer" or not given:
            raise _Problem(401, "unauthorized", "send 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="fly-scaler"'})
        matched = False
        for token in self._tokens:  # no early exit: timing must not tell which token matched
            matched |= hmac.compare_digest(given, token)
        if not matched:
            raise _Problem(403, "forbidden", "the token is not valid for this API")


def create_http_app(
    *,
    metrics: Metrics,
    redis: aioredis.Redis,
    namespace: str,
    prefix: str,
    queues: Mapping[str, QueueInfo],
    tokens: Sequence[Secret],
    ready: Callable[[], tuple[bool, str]],
    max_body_bytes: int = 256 * 1024,
) -> Starlette:
    """The scaler's ASGI app (see the module docstring). ``redis`` holds the dramatiq queues of
    ``namespace`` and the scaler's keys under ``prefix``; ``ready`` answers ``/readyz``."""
    for name in queues:
        if not _QUEUE_NAME.fullmatch(name):
            raise ValueError(f"queues: {name!r} is not a dramatiq queue name "
                             "([a-zA-Z_][a-zA-Z0-9._-]*)")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    store = MessageStore(redis, namespace=namespace, prefix=prefix)
    auth = _Auth(tokens)
    document = openapi_document()

    def refuse(problem: _Problem) -> Response:
        metrics.http_rejected.labels(str(problem.status)).inc()
        return problem.response()

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            ok, reason = ready()
        except Exception as exc:  # the reason must not carry the exception text (secrets)
            ok, reason = False, f"readiness check failed: {type(exc).__name__}"
        return JSONResponse({"status": "ready" if ok else "not ready", "reason": reason},
                            status_code=200 if ok else 503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def enqueue(request: Request) -> Response:
        try:
            auth.check(request)
            queue = request.path_params["queue"]
            info = queues.get(queue)
            if info is None:
                raise _Problem(404, "unknown_queue", f"queue {queue!r} does not accept HTTP "
                               "messages; use a queue from the scaler's configuration")
            parsed = _parse_enqueue(await _read_json(request, max_body_bytes), queue, info)
            return await _enqueue(queue, parsed)
        except _Problem as problem:
            return refuse(problem)

    async def _enqueue(queue: str, parsed: _EnqueueRequest) -> Response:
        message = build_message(
            queue=queue, actor=parsed.actor, args=parsed.args, kwargs=parsed.kwargs,
            options=parsed.options, message_id=parsed.message_id,
            now_ms=int(time.time() * 1000), delay_ms=parsed.delay_ms)
        try:
            result = await store.enqueue(message, digest=parsed.digest)
            retried = not result.created and (result.queue, result.digest) == (
                queue, parsed.digest)
            state = await store.lookup(result.message_id) if retried else None
        except RedisError as exc:
            log.warning("http.enqueue_failed", queue=queue, error=type(exc).__name__)
            raise _Problem(503, "unavailable", "Redis is unavailable; retry with the same "
                           "message_id", headers={"Retry-After": "1"}) from exc
        location = {"Location": f"/v1/messages/{result.message_id}"}
        if result.created:
            metrics.http_enqueued.labels(queue).inc()
            log.info("http.enqueued", queue=queue, actor=parsed.actor,
                     message_id=result.message_id)
            body: dict[str, Any] = {"message_id": result.message_id, "queue": queue,
                                    "state": "queued"}
            if "eta" in message.options:
                body["eta_ms"] = message.options["eta"]
            return JSONResponse(body, status_code=202, headers=location)
        if not retried:
            raise _Problem(409, "conflict", f"message_id {result.message_id} was already used "
                           "for a different message; send a new message_id")
        body = (state.to_json() if state is not None else
                {"message_id": result.message_id, "queue": queue, "state": "done"})
        return JSONResponse(body, status_code=200, headers=location)

    async def message_state(request: Request) -> Response:
        try:
            auth.check(request)
            raw = request.path_params["message_id"]
            try:
                message_id = str(uuid.UUID(raw))
            except ValueError:
                raise _Problem(422, "invalid_request", "message_id must be a UUID", errors=[
                    _issue("message_id", f"not a UUID: {raw[:64]!r}",
                           "use the message_id returned by the enqueue call")]) from None
            try:
                state = await store.lookup(message_id)
            except RedisError as exc:
                raise _Problem(503, "unavailable", "Redis is unavailable; retry",
                               headers={"Retry-After": "1"}) from exc
        except _Problem as problem:
            return refuse(problem) if problem.status in (401, 403) else problem.response()
        if state is None:
            return _Problem(404, "unknown_message", f"no message {message_id} (unknown, or its "
                            "record expired)").response()
        return JSONResponse(state.to_json())

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = getattr(exc, "headers", None)
        return _Problem(status, "not_found" if status == 404 else "http_error",
                        str(getattr(exc, "detail", "error")), headers=headers).response()

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/v1/openapi.json", openapi, methods=["GET"]),
            Route("/v1/queues/{queue}/messages", enqueue, methods=["POST"]),
            Route("/v1/messages/{message_id}", message_state, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(RequestIdMiddleware)],
    )


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Binds a request id to every log event of a request (``request_id``) and answers it in the
    ``x-request-id`` header: the caller's own id when it sends a sane one, else a new one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def _error_schema(with_errors: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"error": {"type": "string"}, "message": {"type": "string"}}
    required = ["error", "message"]
    if with_errors:
        props["errors"] = {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}
        required.append("errors")
    return {"type": "object", "properties": props, "required": required}


def _json(ref: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
    if headers:
        out["headers"] = headers
    return out


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this HTTP API (served at ``/v1/openapi.json``)."""
    unauthorized = _json("Error", "No or malformed Authorization header.", {
        "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}})
    forbidden = _json("Error", "The bearer token matches no configured token.")
    unavailable = _json("Error", "Redis is unavailable; retry (with the same message_id).")
    machine = {
        "type": "object", "additionalProperties": False,
        "description": "Per-job machine: a preset size or cpus/memory_mb/cpu_kind, and a region.",
        "properties": {
            "size": {"type": "string", "examples": ["shared-cpu-1x", "performance-2x"]},
            "cpus": {"type": "integer"},
            "memory_mb": {"type": "integer"},
            "cpu_kind": {"type": "string", "enum": ["shared", "performance"]},
            "region": {"type": "string", "pattern": "^[a-z]{3}$"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "fly-scaler HTTP API", "version": "1",
                 "description": "Enqueue dramatiq messages over HTTP, follow their state, and "
                                "read the scaler's health and metrics."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _error_schema(),
                "ValidationError": _error_schema(with_errors=True),
                "FieldError": {"type": "object", "required": ["field", "message", "fix"],
                               "properties": {"field": {"type": "string"},
                                              "message": {"type": "string"},
                                              "fix": {"type": "string"}}},
                "Machine": machine,
                "EnqueueRequest": {
                    "type": "object", "additionalProperties": False, "required": ["actor"],
                    "properties": {
                        "actor": {"type": "string", "description": "An actor allowed on the "
                                  "queue (else 422)."},
                        "args": {"type": "array", "default": []},
                        "kwargs": {"type": "object", "default": {}},
                        "message_id": {"type": "string", "format": "uuid", "description":
                                       "Idempotency key: the same id again returns the "
                                       "existing message (200) instead of a duplicate."},
                        "options": {"type": "object", "additionalProperties": False,
                                    "properties": {
                                        "delay_ms": {"type": "integer", "minimum": 0,
                                                     "maximum": MAX_DELAY_MS},
                                        "max_retries": {"type": "integer", "minimum": 0,
                                                        "maximum": MAX_INT},
                                        "time_limit_ms": {"type": "integer", "minimum": 1,
                                                          "maximum": MAX_INT},
                                        "machine": {"$ref": "#/components/schemas/Machine"},
                                    }},
                    },
                },
                "MessageState": {
                    "type": "object", "required": ["message_id", "queue", "state"],
                    "properties": {
                        "message_id": {"type": "string", "format": "uuid"},
                        "queue": {"type": "string"},
                        "state": {"type": "string", "enum": list(STATES)},
                        "eta_ms": {"type": "integer", "description": "Delayed until then."},
                        "machine_name": {"type": "string"},
                        "machine_id": {"type": "string"},
                        "launch": {"type": "integer"},
                        "reason": {"type": "string", "description": "Why it was dead-lettered."},
                    },
                },
                "Status": {"type": "object", "required": ["status"],
                           "properties": {"status": {"type": "string"},
                                          "reason": {"type": "string"}}},
            },
        },
        "paths": {
            "/metrics": {"get": {
                "operationId": "metrics", "summary": "Prometheus metrics.", "security": [],
                "responses": {"200": {"description": "Prometheus text format.", "content": {
                    "text/plain": {"schema": {"type": "string"}}}}}}},
            "/healthz": {"get": {
                "operationId": "healthz", "summary": "The process is alive.", "security": [],
                "responses": {"200": _json("Status", "Alive.")}}},
            "/readyz": {"get": {
                "operationId": "readyz", "summary": "Ready to serve (a follower is ready).",
                "security": [], "responses": {"200": _json("Status", "Ready."),
                                              "503": _json("Status", "Not ready, with why.")}}},
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
                    "schema": {"$ref": "#/components/schemas/EnqueueRequest"}}}},
                "responses": {
                    "202": _json("MessageState", "Accepted: the message is in Redis.",
                                 {"Location": {"schema": {"type": "string"}}}),
                    "200": _json("MessageState", "This message_id was already enqueued with "
                                 "the same content; its current state (nothing written)."),
                    "400": _json("Error", "The body is not JSON, or Content-Length is bad."),
                    "401": unauthorized, "403": forbidden,
                    "404": _json("Error", "The queue does not accept HTTP messages."),
                    "409": _json("Error", "message_id already used for a different message."),
                    "413": _json("Error", "The body is larger than the configured limit."),
                    "422": _json("ValidationError", "Invalid body (each field with a fix), "
                                 "or an actor not allowed on the queue."),
                    "503": unavailable,
                }}},
            "/v1/messages/{message_id}": {"get": {
                "operationId": "getMessage", "summary": "Where a message is now.",
                "security": [{"bearer": []}],
                "parameters": [{"name": "message_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}],
                "responses": {
                    "200": _json("MessageState", "Its state."),
                    "401": unauthorized, "403": forbidden,
                    "404": _json("Error", "No such message (or its record expired)."),
                    "422": _json("ValidationError", "message_id is not a UUID."),
                    "503": unavailable,
                }}},
        },
    }
