"""The engine under both clients: rate governor, HTTP, error mapping, retries, create resolution.

One :class:`Engine` executes :class:`~scaler.fly._operations.Call` objects on an event loop. The
async client awaits it directly; the sync client runs it on a private loop thread, adapting a
sync httpx transport with :class:`SyncTransportAdapter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from typing import Any, TypedDict, TypeVar, cast

import httpx
import msgspec
from pydantic import ValidationError

from scaler.fly._operations import Call
from scaler.fly.errors import (
    AmbiguousCreate,
    Conflict,
    FlyError,
    FlyTransportError,
    RateLimited,
    Unprocessable,
    api_error,
)
from scaler.fly.limits import Governor, LocalGovernor, classify
from scaler.fly.models import Machine
from scaler.fly.retry import RetryPolicy, Safety, is_ambiguous, should_retry
from scaler.secret import Secret

__all__ = [
    "DEFAULT_BASE_URL",
    "ClientOptions",
    "Engine",
    "Observer",
    "SyncTransportAdapter",
    "WaitObserver",
    "precondition",
]

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.machines.dev"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
Observer = Callable[[str, int | None, float], None]
"""Called after every HTTP attempt: ``(action, status or None on transport error, seconds)``."""
WaitObserver = Callable[[str, float], None]
"""Called when the rate governor made a call wait: ``(action, seconds waited)``."""

log = logging.getLogger(__name__)

# Errors raised before a single byte could reach Fly: safe to repeat for any operation.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_precondition: ContextVar[Callable[[], None] | None] = ContextVar("fly_precondition", default=None)


@contextlib.contextmanager
def precondition(check: Callable[[], None]) -> Iterator[None]:
    """Calls made inside this block (in this task) run ``check()`` before every attempt, retries
    included, and again once the rate governor lets the attempt through; ``check`` raises to
    stop the call (e.g. the scaler's leader fence: a replica that lost its lease while a create
    waited or retried sends nothing more)."""
    token = _precondition.set(check)
    try:
        yield
    finally:
        _precondition.reset(token)


def _check_precondition() -> None:
    check = _precondition.get()
    if check is not None:
        check()


class ClientOptions(TypedDict, total=False):
    """Keyword options shared by :class:`AsyncFlyClient` and :class:`FlyClient`.

    ``base_url`` (default ``FLY_API_URL`` or ``https://api.machines.dev``), ``timeout`` (seconds or
    an ``httpx.Timeout``, applied to every call), ``governor`` (default a
    :class:`~scaler.fly.limits.LocalGovernor` on the same clock), ``retry`` (a
    :class:`~scaler.fly.retry.RetryPolicy`), ``clock``/``sleep``/``uniform`` (time source, async
    sleep and ``random.uniform``-like jitter: inject fakes in tests), ``observer`` and
    ``wait_observer`` (metrics hooks, see :data:`Observer` and :data:`WaitObserver`).
    """

    base_url: str | None
    timeout: float | httpx.Timeout
    governor: Governor
    retry: RetryPolicy
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    uniform: Callable[[float, float], float]
    observer: Observer | None
    wait_observer: WaitObserver | None


def resolve_base_url(base_url: str | None) -> str:
    """The API root without ``/v1`` (paths carry it), from the argument or ``FLY_API_URL``."""
    url = (base_url or os.environ.get("FLY_API_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"base_url={url!r} must start with http:// or https:// "
            f"(e.g. {DEFAULT_BASE_URL} or http://_api.internal:4280)"
        )
    return url.removesuffix("/v1")


def resolve_token(token: str | Secret | None) -> Secret:
    """The API token from the argument or ``FLY_API_TOKEN``, wrapped so it never prints."""
    value = token.get_secret_value() if isinstance(token, Secret) else token
    value = (value or os.environ.get("FLY_API_TOKEN") or "").strip()
    if not value:
        raise ValueError("token is missing: pass token=... or set FLY_API_TOKEN")
    return Secret(value)


def _authorization(token: Secret) -> str:
    value = token.get_secret_value()
    # Macaroon tokens from `fly tokens create` carry their own scheme; Bearer would be refused.
    return value if value.startswith("FlyV1 ") else f"Bearer {value}"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


class Engine:
    """Executes Calls: governor first, then HTTP, then error mapping and bounded retries."""

    def __init__(
        self,
        token: str | Secret | None,
        transport: httpx.AsyncBaseTransport | None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        governor: Governor | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
        observer: Observer | None = None,
        wait_observer: WaitObserver | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self._token = resolve_token(token)
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._governor: Governor = governor or LocalGovernor(clock=clock, sleep=sleep)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._observer = observer
        self._wait_observer = wait_observer
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=self._timeout,
            headers={"user-agent": "fly-scaler/0.1"}, follow_redirects=False,
        )
        self._offsets: deque[float] = deque(maxlen=15)

    def clock_offset(self) -> float:
        """Fly's clock minus ours, in seconds, from the ``Date`` headers of recent answers (the
        median of the last 15; 0.0 before the first answer). A ``Date`` has whole seconds, so the
        estimate is good to about half a second plus the network delay."""
        return statistics.median(self._offsets) if self._offsets else 0.0

    def _sample_clock(self, response: httpx.Response, sent_wall: float) -> None:
        raw = response.headers.get("date")
        if not raw:
            return
        try:
            fly_now = parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError):
            return
        # The header truncates to the second: Fly's time was in [fly_now, fly_now + 1).
        self._offsets.append(fly_now + 0.5 - (sent_wall + time.time()) / 2.0)

    async def aclose(self) -> None:
        """Close the connection pool (and the transport)."""
        await self._http.aclose()

    async def execute(self, call: Call[T]) -> T:
        """Run ``call`` with retries per its safety; raise a :class:`FlyError` when it fails."""
        started = self._clock()
        attempt = 0
        create_unknown = False
        while True:
            attempt += 1
            try:
                return await self._attempt(call)
            except FlyError as exc:
                # A name conflict may be our own machine: after an unknown outcome (409 or 422),
                # or from the first attempt when an earlier call may have made it (409).
                conflict = (create_unknown and isinstance(exc, Conflict | Unprocessable)) or (
                    call.may_exist and isinstance(exc, Conflict))
                if call.safety is Safety.CREATE and (is_ambiguous(exc) or conflict):
                    # The machine may exist: find it before anything else is tried.
                    found = await self._resolve_create(call, exc)
                    if found is not None:
                        return cast(T, found)
                    if conflict:
                        raise
                    create_unknown = True
                elif not should_retry(exc, call.safety):
                    raise
                delay = self._next_delay(exc, attempt, started, call.retry)
                if delay is None:
                    raise
                # httpx's own request lines are debug only: a retried answer is said here, once
                # per attempt, with its cause (the caller logs the final failure).
                log.info("fly call retried: %s %s: %s (attempt %d, next in %.1fs)",
                         call.method, call.path, exc, attempt, delay)
                await self._sleep(delay)

    def _next_delay(
        self, exc: FlyError, attempt: int, started: float, retry: RetryPolicy | None = None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when the budget is spent."""
        policy = retry or self._retry
        delay = policy.delay(attempt, self._uniform)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        elapsed = self._clock() - started
        if attempt >= policy.max_attempts or elapsed + delay > policy.max_elapsed:
            return None
        return delay

    async def _resolve_create(self, call: Call[Any], exc: FlyError) -> Machine | None:
        """Look for the machine an ambiguous create may have made; None if it is not there."""
        if call.lookup is None:
            raise AmbiguousCreate(
                f"the outcome is unknown ({exc}) and the machine has no name or metadata to "
                "look it up by: list the app's machines before creating again"
            ) from exc
        try:
            machines: list[Machine] = await self.execute(call.lookup.call)
        except FlyError as err:
            raise AmbiguousCreate(
                f"the outcome is unknown ({exc}) and looking it up by {call.lookup.by} failed: "
                f"{err}"
            ) from err
        return call.lookup.pick(machines)

    async def _attempt(self, call: Call[T]) -> T:
        route = classify(call.method, call.path)
        _check_precondition()
        waited = await self._governor.acquire(route.action, route.scope)
        if waited > 0 and self._wait_observer is not None:
            self._wait_observer(route.action, waited)
        _check_precondition()
        headers = {"authorization": _authorization(self._token), **call.headers}
        timeout = self._timeout
        if call.read_timeout is not None:
            timeout = httpx.Timeout(
                connect=timeout.connect, read=call.read_timeout, write=timeout.write,
                pool=timeout.pool,
            )
        request = self._http.build_request(
            call.method, call.path, params=tuple(call.params), headers=headers,
            json=call.body, timeout=timeout,
        )
        began = self._clock()
        sent_wall = time.time()
        failure: FlyTransportError | None = None
        try:
            response = await self._http.send(request)
        except httpx.TransportError as err:
            failure = FlyTransportError(
                f"{type(err).__name__}: {err}", sent=not isinstance(err, _NOT_SENT),
                action=route.action,
            )
        if failure is not None:
            # Raised outside the except block: the httpx error holds the request, and the
            # request holds the token, so it must not ride along as __context__.
            self._observe(route.action, None, began)
            raise failure
        self._observe(route.action, response.status_code, began)
        self._sample_clock(response, sent_wall)
        if response.status_code >= 400:
            retry_after = _retry_after(response)
            if response.status_code == 429:
                self._governor.penalize(route.action, route.scope, retry_after)
            raise api_error(
                response.status_code, _body(response), retry_after=retry_after,
                request_id=response.headers.get("fly-request-id"), action=route.action,
            )
        try:
            return call.parse(response.content if call.raw else _body(response))
        except (ValidationError, msgspec.DecodeError, TypeError, AttributeError) as err:
            count = err.error_count() if isinstance(err, ValidationError) else 1
            raise FlyError(
                f"{route.action}: HTTP {response.status_code} answer does not have the expected "
                f"shape ({count} problem(s), first: {_first_problem(err)})"
            ) from None

    def _observe(self, action: str, status: int | None, began: float) -> None:
        if self._observer is not None:
            self._observer(action, status, self._clock() - began)


def _first_problem(err: Exception) -> str:
    # Only the location and the message: a rejected value could be a config's secret env var.
    if isinstance(err, ValidationError):
        first = err.errors(include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        return f"{where}: {first['msg']}"
    if isinstance(err, msgspec.ValidationError):
        return str(err)  # the expected and found types and where, never the value
    return type(err).__name__


_ENCODING_HEADERS = {"content-encoding", "content-length", "transfer-encoding"}


class SyncTransportAdapter(httpx.AsyncBaseTransport):
    """Runs a sync httpx transport (e.g. ``MockTransport`` with a sync handler) from async code,
    in a worker thread so the loop keeps running."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        def send() -> tuple[int, list[tuple[str, str]], bytes]:
            response = self._transport.handle_request(request)
            try:
                content = response.read()
            finally:
                response.close()
            # The body is decoded now: headers describing the encoded form no longer apply.
            headers = [
                (k, v) for k, v in response.headers.multi_items()
                if k.lower() not in _ENCODING_HEADERS
            ]
            return response.status_code, headers, content

        status, headers, content = await asyncio.to_thread(send)
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._transport.close)
