"""The scaler's HTTP port: metrics, health, and the enqueue API for apps not written in Python.

Endpoints (:func:`create_http_app`; the OpenAPI document at ``GET /v1/openapi.json`` is the
reference, built by :func:`scaler.http.openapi.openapi_document` from the models that validate
the requests and produce the answers):

- ``GET /metrics``: Prometheus text. ``GET /healthz``: 200 while the process serves.
  ``GET /readyz``: 200 or 503 with the reason given by the ``ready`` callback.
- ``POST /v1/queues/{queue}/messages``: enqueue a dramatiq message (:mod:`scaler.http.enqueue`;
  see :mod:`scaler.jobs.messages` for exactly what is written). 202 when written; 200 when
  ``message_id`` was already used for the same message (idempotent retry, nothing written); 409
  when it was used for a different one.
- ``POST /v1/webhooks/github`` (when github pools exist): GitHub's ``workflow_job`` deliveries,
  signed with the webhook secret instead of a bearer token (:mod:`scaler.github.webhook`).
- ``GET /v1/messages/{message_id}``: where the message is now (queued, claimed, running, done,
  dead_lettered with its reason), for a message sent over HTTP or any message the scaler claimed,
  however it was sent.

Errors are JSON ``{"error": code, "message": sentence}``; a 422 adds ``"errors": [{"field",
"message", "fix"}]``, one per problem (:mod:`scaler.http.responses`). Auth on ``/v1/queues`` and
``/v1/messages``: ``Authorization: Bearer <token>``; no or malformed header -> 401 (with
``WWW-Authenticate``), a token that matches none of the configured ones -> 403. A body over
``max_body_bytes`` -> 413 (Content-Length is checked first, then the bytes are counted as they
arrive, so a chunked body cannot slip past). A body that is not JSON -> 400; JSON of the wrong
shape -> 422. Redis unavailable -> 503: the write may or may not have happened, so retry with the
same ``message_id`` (always send one when retrying matters).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import redis.asyncio as aioredis
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaler.http.auth import BearerAuth
from scaler.http.enqueue import MAX_DELAY_MS, EnqueueApi, QueueInfo
from scaler.http.openapi import openapi_document
from scaler.http.responses import Problem, Status, answer
from scaler.jobs.messages import MessageStore
from scaler.secret import Secret
from scaler.telemetry.metrics import Metrics

__all__ = ["MAX_DELAY_MS", "QueueInfo", "RequestIdMiddleware", "create_http_app",
           "openapi_document"]

_QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")


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
    github_webhook: Callable[[Request], Awaitable[Response]] | None = None,
) -> Starlette:
    """The scaler's ASGI app (see the module docstring). ``redis`` holds the dramatiq queues of
    ``namespace`` and the scaler's keys under ``prefix``; ``ready`` answers ``/readyz``;
    ``github_webhook`` (when github pools exist) answers ``POST /v1/webhooks/github``
    (:mod:`scaler.github.webhook`)."""
    for name in queues:
        if not _QUEUE_NAME.fullmatch(name):
            raise ValueError(f"queues: {name!r} is not a dramatiq queue name "
                             "([a-zA-Z_][a-zA-Z0-9._-]*)")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    api = EnqueueApi(store=MessageStore(redis, namespace=namespace, prefix=prefix),
                     queues=queues, auth=BearerAuth(tokens), metrics=metrics,
                     max_body_bytes=max_body_bytes)
    document = openapi_document()

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return answer(Status(status="ok"))

    async def readyz(request: Request) -> Response:
        try:
            ok, reason = ready()
        except Exception as exc:  # the reason must not carry the exception text (secrets)
            ok, reason = False, f"readiness check failed: {type(exc).__name__}"
        return answer(Status(status="ready" if ok else "not ready", reason=reason),
                      200 if ok else 503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = getattr(exc, "headers", None)
        return Problem(status, "not_found" if status == 404 else "http_error",
                       str(getattr(exc, "detail", "error")), headers=headers).response()

    extra = ([Route("/v1/webhooks/github", github_webhook, methods=["POST"])]
             if github_webhook is not None else [])
    return Starlette(
        routes=[
            *extra,
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/v1/openapi.json", openapi, methods=["GET"]),
            Route("/v1/queues/{queue}/messages", api.enqueue, methods=["POST"]),
            Route("/v1/messages/{message_id}", api.message_state, methods=["GET"]),
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
