"""Typed clients for the Fly Machines API: :class:`AsyncFlyClient` and the sync :class:`FlyClient`.

Both expose the same methods, defined once in ``scaler.fly._operations`` and attached to a shared
base as descriptors: on the async client a method returns an awaitable, on the sync one the result.
The sync client drives the same async engine on a private event-loop thread, so retries, rate
limiting and create resolution behave identically.

::

    async with AsyncFlyClient() as fly:          # FLY_API_TOKEN, FLY_API_URL from the env
        m = await fly.create_machine("my-app", FlyMachineConfig(image="nginx"), name="web-1")
        await fly.wait_machine("my-app", m.id, "started", timeout=30)

    with FlyClient(token="...", base_url="http://_api.internal:4280") as fly:
        fly.list_machines("my-app", state=["started", "stopped"], metadata={"pool": "ci"})

Every call first takes a token from the rate governor (``limits.classify(method, path)`` names
the action and scope); a 429 penalizes the bucket. Errors are ``scaler.fly.errors``; retries follow
``scaler.fly.retry``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, Unpack, overload

import httpx

from scaler.fly import _operations as ops
from scaler.fly._operations import Call
from scaler.fly._transport import ClientOptions, Engine, SyncTransportAdapter, precondition
from scaler.secret import Secret

__all__ = ["AsyncFlyClient", "ClientOptions", "FlyClient", "precondition"]

P = ParamSpec("P")
T = TypeVar("T")


class _Operation(Generic[P, T]):
    """Turns a Call builder into a client method (awaitable on the async client, plain on the
    sync one)."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self._build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Operation[P, T]: ...
    @overload
    def __get__(
        self, obj: AsyncFlyClient, owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, obj: FlyClient, owner: type[Any]) -> Callable[P, T]: ...

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        build = self._build

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return obj._run(build(*args, **kwargs))

        return method


class _Operations:
    """Every API operation, shared by both clients (docs are on the ``_operations`` builders)."""

    # apps
    list_apps = _Operation(ops.list_apps)
    create_app = _Operation(ops.create_app)
    get_app = _Operation(ops.get_app)
    delete_app = _Operation(ops.delete_app)
    # machines
    list_machines = _Operation(ops.list_machines)
    list_machines_slim = _Operation(ops.list_machines_slim)
    create_machine = _Operation(ops.create_machine)
    get_machine = _Operation(ops.get_machine)
    update_machine = _Operation(ops.update_machine)
    start_machine = _Operation(ops.start_machine)
    stop_machine = _Operation(ops.stop_machine)
    restart_machine = _Operation(ops.restart_machine)
    suspend_machine = _Operation(ops.suspend_machine)
    signal_machine = _Operation(ops.signal_machine)
    destroy_machine = _Operation(ops.destroy_machine)
    wait_machine = _Operation(ops.wait_machine)
    cordon_machine = _Operation(ops.cordon_machine)
    uncordon_machine = _Operation(ops.uncordon_machine)
    list_events = _Operation(ops.list_events)
    list_versions = _Operation(ops.list_versions)
    # metadata
    get_metadata = _Operation(ops.get_metadata)
    get_metadata_key = _Operation(ops.get_metadata_key)
    set_metadata_key = _Operation(ops.set_metadata_key)
    update_metadata = _Operation(ops.update_metadata)
    delete_metadata_key = _Operation(ops.delete_metadata_key)
    # leases
    acquire_lease = _Operation(ops.acquire_lease)
    refresh_lease = _Operation(ops.refresh_lease)
    get_lease = _Operation(ops.get_lease)
    release_lease = _Operation(ops.release_lease)
    # volumes
    create_volume = _Operation(ops.create_volume)
    list_volumes = _Operation(ops.list_volumes)
    get_volume = _Operation(ops.get_volume)
    update_volume = _Operation(ops.update_volume)
    delete_volume = _Operation(ops.delete_volume)
    extend_volume = _Operation(ops.extend_volume)
    list_snapshots = _Operation(ops.list_snapshots)
    create_snapshot = _Operation(ops.create_snapshot)
    # platform
    list_regions = _Operation(ops.list_regions)

    _engine: Engine

    @property
    def base_url(self) -> str:
        """The API root the client talks to (without ``/v1``)."""
        return self._engine.base_url

    def clock_offset(self) -> float:
        """Fly's clock minus this machine's, in seconds, estimated from the ``Date`` headers of
        recent answers (0.0 before any). Compare Fly's timestamps with ``time.time() + offset``."""
        return self._engine.clock_offset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"


class AsyncFlyClient(_Operations):
    """The async Fly Machines API client.

    ``token`` is a str or :class:`~scaler.secret.Secret` (default ``FLY_API_TOKEN``), sent as
    ``Authorization: Bearer <token>``. ``transport`` is any ``httpx.AsyncBaseTransport`` (e.g.
    ``httpx.MockTransport`` or ``httpx.ASGITransport``); see :class:`ClientOptions` for the rest.
    """

    def __init__(
        self,
        token: str | Secret | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._engine = Engine(token, transport, **options)

    def _run(self, call: Call[T]) -> Coroutine[Any, Any, T]:
        return self._engine.execute(call)

    async def aclose(self) -> None:
        """Close connections."""
        await self._engine.aclose()

    async def __aenter__(self) -> AsyncFlyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class FlyClient(_Operations):
    """The sync Fly Machines API client: same methods and options as :class:`AsyncFlyClient`,
    ``transport`` is an ``httpx.BaseTransport``. Call :meth:`close` (or use ``with``) to stop its
    private event-loop thread. Safe to share between threads."""

    def __init__(
        self,
        token: str | Secret | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        adapted = SyncTransportAdapter(transport) if transport is not None else None
        self._engine = Engine(token, adapted, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fly-client-loop", daemon=True
        )
        self._thread.start()
        self._closed = False

    def _run(self, call: Call[T]) -> T:
        if self._closed:
            raise RuntimeError("this FlyClient is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(
            self._engine.execute(call), self._loop
        )
        return future.result()

    def close(self) -> None:
        """Close connections and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _shutdown(self) -> None:
        await self._engine.aclose()
        await self._loop.shutdown_default_executor()

    def __enter__(self) -> FlyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
