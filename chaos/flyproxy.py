"""A fault-injecting proxy in front of the local Machines API, for faults that the API's own
fault spec cannot aim: refusing the creates of one pool, or of one app, only (the API's faults
apply to every create of every app). Everything else passes through unchanged.

:class:`FlyProxy` runs on a free loopback port on a background thread until :meth:`close`;
point the scaler's ``[fly] api_url`` at :attr:`url`. ``refuse`` decides, per create call, whether
to answer it with a refusal instead of forwarding it; every create call is logged.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chaos.creates import job_of, pool_of

__all__ = ["CreateCall", "FlyProxy", "Refusal"]

Refusal = tuple[int, dict[str, Any]]
"""An HTTP status and JSON body to answer instead of Fly."""

_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive"})


@dataclass(frozen=True)
class CreateCall:
    """One create call seen by the proxy: when (monotonic), for which pool and job, the answer."""

    t: float
    pool: str | None
    job: str | None
    status: int


class FlyProxy:
    """Forward to ``upstream``; ``refuse(metadata) -> Refusal | None`` for each create call, and
    ``refuse_in(app) -> Refusal | None`` before it when given."""

    def __init__(
        self, upstream: str, refuse: Callable[[dict[str, Any]], Refusal | None],
        refuse_in: Callable[[str], Refusal | None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.refuse = refuse
        self.refuse_in = refuse_in
        self.calls: list[CreateCall] = []
        self._lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=[
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._run, name="fly-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fault proxy did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        async def serve() -> None:
            try:
                await self._server.serve(sockets=[self._socket])
            finally:
                if self._client is not None:
                    await self._client.aclose()

        asyncio.run(serve())

    def creates(self) -> list[CreateCall]:
        """The create calls so far, oldest first."""
        with self._lock:
            return list(self.calls)

    async def _forward(self, request: Request) -> Response:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.upstream, timeout=60)
        body = await request.body()
        path = request.url.path
        is_create = (request.method == "POST" and path.startswith("/v1/apps/")
                     and path.endswith("/machines") and path.count("/") == 4)
        meta: dict[str, Any] = {}
        if is_create:
            try:
                parsed = json.loads(body)
                meta = dict(((parsed.get("config") or {}).get("metadata")) or {})
            except (ValueError, AttributeError, TypeError):
                meta = {}
            refusal = self.refuse_in(path.split("/")[3]) if self.refuse_in else None
            refusal = refusal or self.refuse(meta)
            if refusal is not None:
                status, payload = refusal
                self._log(meta, status)
                return Response(json.dumps(payload), status_code=status,
                                media_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        upstream = await self._client.request(
            request.method, path, params=request.query_params, content=body, headers=headers
        )
        if is_create:
            self._log(meta, upstream.status_code)
        out_headers = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in _HOP and k.lower() != "content-encoding"}
        return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)

    def _log(self, meta: dict[str, Any], status: int) -> None:
        call = {"metadata": meta}
        with self._lock:
            self.calls.append(CreateCall(time.monotonic(), pool_of(call), job_of(call), status))

    def close(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
