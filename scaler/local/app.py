"""The ASGI application: auth, request ids, faults, rate limits, then the handler named by the
spec's operationId. ``create_app(config)`` builds it; :mod:`scaler.local.server` runs it.

Every response carries a ``Date`` header in the API's clock (see :mod:`scaler.local.clock`): the
servers that run this app turn uvicorn's own ``Date`` off."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from scaler.fly.limits import classify
from scaler.fly.spec import load_spec
from scaler.local import clock, ids, routes_apps, routes_machines
from scaler.local.config import LocalAPIConfig
from scaler.local.context import Context, DropConnection, Handler, json_response
from scaler.local.errors import APIError
from scaler.local.faults import FaultInjector, FaultSpec, RequestFault
from scaler.local.lifecycle import Engine
from scaler.local.process_runtime import ProcessRuntime
from scaler.local.ratelimit import RateLimiter
from scaler.local.runtime import ExitCallback, Runtime
from scaler.local.sim_runtime import SimRuntime
from scaler.local.store import Store

__all__ = ["LocalAPI", "create_app"]

HANDLERS: dict[str, Handler] = {**routes_apps.HANDLERS, **routes_machines.HANDLERS}
UNAUTHORIZED = {"error": "Authenticate: token validation error"}
_NO_FAULT = RequestFault()
_RAW_SEND = "scaler.local.raw_send"


def _spec_paths() -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for path, ops in load_spec()["paths"].items():
        rx = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for method in ops:
            out.append((method.upper(), rx))
    return out


def token_owner(token: str) -> str:
    """The lease owner for a token: stable, and reveals nothing of the token."""
    return f"user-{hashlib.sha256(token.encode()).hexdigest()[:8]}@local.fly"


class LocalAPI(Starlette):
    """The Starlette app, carrying the server's parts as attributes (``store``, ``engine``...)."""

    config: LocalAPIConfig
    store: Store
    engine: Engine
    faults: FaultInjector
    limiter: RateLimiter | None
    workdir: Path
    owns_workdir: bool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_RAW_SEND] = send  # to drop a connection without answering (ambiguous creates)
        await super().__call__(scope, receive, _dated(send) if scope["type"] == "http" else send)


def _dated(send: Send) -> Send:
    """``send`` with a ``Date`` header in the API's clock on the response start."""

    async def dated(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
            headers.append((b"date", clock.http_date().encode()))
            message = {**message, "headers": headers}
        await send(message)

    return dated


def create_app(config: LocalAPIConfig) -> LocalAPI:
    """Build the local Machines API as an ASGI app (state lives in ``app.store``)."""
    store = Store(config.recent_requests)
    faults = FaultInjector(FaultSpec.parse(config.faults), config.seed)
    clock.set_offset(faults.spec.clock.offset)
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="scaler-local-api-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def runtime_factory(on_exit: ExitCallback) -> Runtime:
        if config.runtime == "sim":
            return SimRuntime(on_exit, config.sim_run_seconds, config.sim_exit_code)
        return ProcessRuntime(on_exit, workdir, config.images, config.image_files)

    engine = Engine(
        store,
        config.resolved_timings,
        faults,
        runtime_factory,
        clock=config.clock,
        destroyed_retention=config.destroyed_retention,
    )
    tokens = [(t.encode(), token_owner(t)) for t in config.all_tokens()]
    spec_paths = _spec_paths()
    limiter = RateLimiter(config.clock) if config.rate_limits == "fly" else None

    def authenticate(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("bearer", "flyv1") or not value:
            return None
        given = value.strip().encode()
        owner = None
        for token, who in tokens:  # compare with every token: constant time overall
            if hmac.compare_digest(given, token):
                owner = who
        return owner

    def finish(response: Response, operation: str) -> Response:
        response.headers["fly-request-id"] = f"{ids.ulid()}-{config.region}"
        store.record_request(config.clock(), operation, response.status_code)
        return response

    async def drop(request: Request) -> Response:
        send = request.scope.get(_RAW_SEND)
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is not None:
            transport.close()
            for _ in range(3):  # let the server see the connection is gone before we "answer"
                await asyncio.sleep(0)
            return Response(status_code=499)
        return json_response({"error": "connection dropped (simulated)"}, 502)

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        if path.startswith("/_admin"):
            return await admin(request)
        arrived = config.clock()
        route = classify(request.method, path)
        operation = route.action
        owner = authenticate(request)
        if owner is None:
            return finish(json_response(UNAUTHORIZED, 401), operation)
        handler = HANDLERS.get(operation)
        if handler is None:
            methods = {m for m, rx in spec_paths if rx.match(path)}
            if request.method in methods:
                body = {"error": f"{operation}: not implemented by the local Machines API"}
                return finish(json_response(body, 501), operation)
            if methods:
                body = {"error": f"method {request.method} not allowed on {path}"}
                return finish(json_response(body, 405), operation)
            return finish(json_response({"error": "not found"}, 404), operation)
        fault = faults.for_request(operation)
        logged = None
        if operation == "Machines_create":  # logged as it arrives; completed when answered
            logged = store.record_create(await _create_facts(request),
                                         request.headers.get("user-agent", ""), arrived)
        answer: Response | None
        try:
            if fault.latency:
                await asyncio.sleep(fault.latency)
            answer = await respond(request, operation, route.params, route.scope, owner,
                                   handler, fault)
        except APIError as exc:
            answer = json_response(exc.body(), exc.http_status)
        except DropConnection:
            answer = None
        if fault.latency_after_commit:  # done (or refused); the answer is late
            await asyncio.sleep(fault.latency_after_commit)
        response = answer if answer is not None else await drop(request)
        if logged is not None:
            logged.update(status=response.status_code, answered=config.clock(),
                          machine_id=getattr(request.state, "created_machine", None))
        return finish(response, operation)

    async def respond(
        request: Request, operation: str, params: dict[str, str], scope: str, owner: str,
        handler: Handler, fault: RequestFault,
    ) -> Response:
        """The answer to a request past auth: a drawn fault, a 429, or the handler's."""
        if fault.outcome == "drop":
            store.faults_injected["drop"] += 1
            await request.body()  # read before the connection goes (the create log shows it)
            raise DropConnection()
        if fault.outcome == "rate_limit":
            store.faults_injected["rate_limit"] += 1
            return _too_many(1.0)
        if fault.outcome == "error":
            store.faults_injected["error"] += 1
            body = {"error": "internal: injected fault", "status": "unknown"}
            return json_response(body, fault.error_status)
        if limiter is not None:
            wait = limiter.check(operation, scope)
            if wait > 0:
                return _too_many(wait)
        ctx = Context(request, operation, params, owner, fault, config, store, engine)
        return await handler(ctx)

    async def admin(request: Request) -> Response:
        if authenticate(request) is None:
            return json_response(UNAUTHORIZED, 401)
        path, method = request.url.path, request.method
        try:
            if path == "/_admin/state" and method == "GET":
                return json_response(store.summary())
            if path == "/_admin/creates" and method == "GET":
                return json_response(store.create_log())
            if path == "/_admin/requests" and method == "GET":
                return json_response(store.request_log(request.query_params.get("operation")))
            if path == "/_admin/faults" and method == "GET":
                return json_response(faults.spec.to_dict())
            if path == "/_admin/faults" and method == "POST":
                body: Any = await request.json()
                seed = body.pop("seed", None) if isinstance(body, dict) else None
                try:
                    faults.configure(FaultSpec.parse(body), seed)
                except (ValueError, TypeError) as exc:
                    raise APIError(400, str(exc)) from None
                clock.set_offset(faults.spec.clock.offset)
                return json_response(faults.spec.to_dict())
            listing = re.fullmatch(r"/_admin/apps/([^/]+)/machines", path)
            if listing and method == "GET":  # no faults, no rate limit: for observers
                return json_response([m.to_wire() for m in store.machines(listing[1])])
            match = re.fullmatch(r"/_admin/apps/([^/]+)/machines/([^/]+)/exit", path)
            if match and method == "POST":
                ctx = Context(
                    request, "admin_exit", {"app_name": match[1], "machine_id": match[2]}, "",
                    _NO_FAULT, config, store, engine,
                )
                return await routes_machines.exit_machine(ctx)
        except APIError as exc:
            return json_response(exc.body(), exc.http_status)
        return json_response({"error": "not found"}, 404)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            clock.set_offset(0.0)
            await engine.close()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]
    app = LocalAPI(
        routes=[Route("/{path:path}", dispatch, methods=methods)], lifespan=lifespan
    )
    app.config = config
    app.store = store
    app.engine = engine
    app.faults = faults
    app.limiter = limiter
    app.workdir = workdir
    app.owns_workdir = config.workdir is None
    return app


async def _create_facts(request: Request) -> dict[str, Any]:
    """What the create log keeps of a create request: its machine name and metadata."""
    try:
        body = json.loads(await request.body())
    except Exception:  # unreadable or not JSON: the log still counts the call
        return {}
    if not isinstance(body, dict):
        return {}
    config = body.get("config")
    metadata = config.get("metadata") if isinstance(config, dict) else None
    return {
        "name": body.get("name") if isinstance(body.get("name"), str) else None,
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def _too_many(wait: float) -> Response:
    response = json_response({"error": "rate limit exceeded"}, 429)
    response.headers["retry-after"] = str(max(1, math.ceil(wait)))
    return response


