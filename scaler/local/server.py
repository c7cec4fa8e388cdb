"""``LocalAPIServer``: the local Machines API served by uvicorn on a background thread, for tests,
benchmarks and ``scaler dev``."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from scaler.local.app import LocalAPI, create_app
from scaler.local.config import LocalAPIConfig
from scaler.local.store import Store

__all__ = ["LocalAPIServer"]


class LocalAPIServer:
    """Run the local Machines API on a free loopback port until :meth:`close`.

    ``LocalAPIServer(runtime="sim", rate_limits="off")`` takes :class:`LocalAPIConfig` fields as
    keywords (or a whole ``config=``). ``url`` is ``http://127.0.0.1:PORT`` (append ``/v1/...``),
    ``token`` the bearer token, ``state`` the in-memory :class:`Store` for assertions.
    Closing stops every machine process it started.
    """

    def __init__(self, config: LocalAPIConfig | None = None, **options: Any) -> None:
        base = config or LocalAPIConfig(host="127.0.0.1", port=0)
        self.config = dataclasses.replace(base, **options) if options else base
        self.app: LocalAPI = create_app(self.config)
        # proto must be IPPROTO_TCP or asyncio skips TCP_NODELAY (40 ms delayed-ACK stalls).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self._socket = sock
        self.port: int = sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app, log_level="warning", access_log=False, lifespan="on",
                timeout_graceful_shutdown=5, date_header=False,  # the app dates in its clock
            )
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="local-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"local Machines API failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("local Machines API did not start within 10 s")
            time.sleep(0.005)
        self._closed = False

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported to the constructor / close()
            self._error = exc
        finally:
            loop.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def token(self) -> str:
        """The bearer token the server accepts."""
        return self.config.token

    @property
    def state(self) -> Store:
        """The in-memory store (apps, machines, volumes, request counters)."""
        return self.app.store

    @property
    def workdir(self) -> Path:
        """Where machine directories, logs and volumes live."""
        return self.app.workdir

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client with the base URL and auth set (close it yourself)."""
        return httpx.Client(base_url=self.url, headers=self.headers, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An async httpx client with the base URL and auth set."""
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, **kwargs)

    def pids(self) -> list[int]:
        """Process ids of the machine processes alive now."""
        return self.app.engine.runtime.pids()

    def close(self) -> None:
        """Stop serving and stop every machine (idempotent)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self.app.engine.runtime.kill_all_now()  # belt and braces if shutdown was cut short
        self._socket.close()
        if self.app.owns_workdir:
            shutil.rmtree(self.app.workdir, ignore_errors=True)

    def __enter__(self) -> LocalAPIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalAPIServer(url={self.url!r}, runtime={self.config.runtime!r})"
