"""Fly's published Machines API rate limits, and which action and scope a request falls under.

One table serves both sides: the client's governor spends tokens against it before a call, and the
local Machines API answers 429 from it. Source: "Working with the Machines API" (see
``docs/fly-behaviour.md``, "Rate limits"): 1 request/s per action with bursts of 3, scoped per
machine or app; Get Machine 5 req/s with bursts of 10; app deletions 100 per minute.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ACTION_LIMITS",
    "DEFAULT_LIMIT",
    "PRUNE_MIN",
    "Governor",
    "Limit",
    "LocalGovernor",
    "RouteMatch",
    "TokenBucket",
    "classify",
    "client_limit_for",
    "limit_for",
]


@dataclass(frozen=True, slots=True)
class Limit:
    """A token-bucket limit: ``rate`` tokens per second refill, at most ``burst`` tokens."""

    rate: float
    burst: int


DEFAULT_LIMIT = Limit(rate=1.0, burst=3)
ACTION_LIMITS: dict[str, Limit] = {
    "Machines_show": Limit(rate=5.0, burst=10),
    "Apps_delete": Limit(rate=100.0 / 60.0, burst=100),
}


def limit_for(action: str) -> Limit:
    """The limit that applies to one action (an OpenAPI ``operationId``)."""
    return ACTION_LIMITS.get(action, DEFAULT_LIMIT)


def client_limit_for(action: str) -> Limit:
    """The limit a client spends against: Fly's rate, with one burst token held back.

    Running at exactly Fly's bucket would turn network jitter into 429s (a request that arrives a
    few milliseconds early finds less than a token). Keeping the client's burst one below Fly's
    leaves a whole token of slack on Fly's side at the same sustained rate.
    """
    limit = limit_for(action)
    return Limit(rate=limit.rate, burst=max(1, limit.burst - 1))


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What a request is, for rate limiting: the action, the scope key, and the path parameters."""

    action: str
    scope: str
    params: dict[str, str]


_SEG = r"([^/]+)"
_M = rf"/v1/apps/{_SEG}/machines/{_SEG}"
_V = rf"/v1/apps/{_SEG}/volumes/{_SEG}"
# (method, path regex, operationId, names of the captured groups). Order matters: first match wins.
_ROUTES: list[tuple[str, re.Pattern[str], str, tuple[str, ...]]] = [
    (m, re.compile(f"^{p}$"), op, names)
    for m, p, op, names in [
        ("GET", r"/v1/apps", "Apps_list", ()),
        ("POST", r"/v1/apps", "Apps_create", ()),
        ("GET", rf"/v1/apps/{_SEG}", "Apps_show", ("app_name",)),
        ("DELETE", rf"/v1/apps/{_SEG}", "Apps_delete", ("app_name",)),
        ("GET", rf"/v1/apps/{_SEG}/machines", "Machines_list", ("app_name",)),
        ("POST", rf"/v1/apps/{_SEG}/machines", "Machines_create", ("app_name",)),
        ("GET", _M, "Machines_show", ("app_name", "machine_id")),
        ("POST", _M, "Machines_update", ("app_name", "machine_id")),
        ("DELETE", _M, "Machines_delete", ("app_name", "machine_id")),
        ("POST", _M + "/start", "Machines_start", ("app_name", "machine_id")),
        ("POST", _M + "/stop", "Machines_stop", ("app_name", "machine_id")),
        ("POST", _M + "/restart", "Machines_restart", ("app_name", "machine_id")),
        ("POST", _M + "/suspend", "Machines_suspend", ("app_name", "machine_id")),
        ("POST", _M + "/signal", "Machines_signal", ("app_name", "machine_id")),
        ("POST", _M + "/cordon", "Machines_cordon", ("app_name", "machine_id")),
        ("POST", _M + "/uncordon", "Machines_uncordon", ("app_name", "machine_id")),
        ("GET", _M + "/wait", "Machines_wait", ("app_name", "machine_id")),
        ("GET", _M + "/events", "Machines_list_events", ("app_name", "machine_id")),
        ("GET", _M + "/versions", "Machines_list_versions", ("app_name", "machine_id")),
        ("GET", _M + "/lease", "Machines_show_lease", ("app_name", "machine_id")),
        ("POST", _M + "/lease", "Machines_create_lease", ("app_name", "machine_id")),
        ("DELETE", _M + "/lease", "Machines_release_lease", ("app_name", "machine_id")),
        ("GET", _M + "/metadata", "Machines_show_metadata", ("app_name", "machine_id")),
        ("PUT", _M + "/metadata", "Machines_update_metadata", ("app_name", "machine_id")),
        ("PATCH", _M + "/metadata", "Machines_update_metadata", ("app_name", "machine_id")),
        ("GET", _M + f"/metadata/{_SEG}", "Machines_get_metadata_key",
         ("app_name", "machine_id", "key")),
        ("POST", _M + f"/metadata/{_SEG}", "Machines_upsert_metadata",
         ("app_name", "machine_id", "key")),
        ("DELETE", _M + f"/metadata/{_SEG}", "Machines_delete_metadata",
         ("app_name", "machine_id", "key")),
        ("GET", rf"/v1/apps/{_SEG}/volumes", "Volumes_list", ("app_name",)),
        ("POST", rf"/v1/apps/{_SEG}/volumes", "Volumes_create", ("app_name",)),
        ("GET", _V, "Volumes_get_by_id", ("app_name", "volume_id")),
        ("PUT", _V, "Volumes_update", ("app_name", "volume_id")),
        ("DELETE", _V, "Volume_delete", ("app_name", "volume_id")),
        ("PUT", _V + "/extend", "Volumes_extend", ("app_name", "volume_id")),
        ("GET", _V + "/snapshots", "Volumes_list_snapshots", ("app_name", "volume_id")),
        ("POST", _V + "/snapshots", "createVolumeSnapshot", ("app_name", "volume_id")),
        ("GET", r"/v1/platform/regions", "Platform_regions_get", ()),
    ]
]


def classify(method: str, path: str) -> RouteMatch:
    """Name the action (the spec's ``operationId``) and the rate-limit scope of a request.

    The scope is the machine id for machine actions, the volume id for volume actions, the app name
    for app-level actions and ``"org"`` otherwise (app deletions are limited org-wide). An unknown
    path is its own action, scoped to the org, so it is still limited rather than free.
    """
    method = method.upper()
    path = path.split("?", 1)[0].rstrip("/") or "/"
    for m, rx, op, names in _ROUTES:
        if m != method:
            continue
        hit = rx.match(path)
        if hit is None:
            continue
        params = dict(zip(names, hit.groups(), strict=True))
        if op == "Apps_delete":
            scope = "org"
        elif "machine_id" in params:
            scope = f"machine:{params['machine_id']}"
        elif "volume_id" in params:
            scope = f"volume:{params['volume_id']}"
        elif "app_name" in params:
            scope = f"app:{params['app_name']}"
        else:
            scope = "org"
        return RouteMatch(action=op, scope=scope, params=params)
    return RouteMatch(action=f"{method} {path}", scope="org", params={})


class TokenBucket:
    """A token bucket driven by an explicit clock value (no hidden time source; easy to test).

    ``reserve(now)`` takes one token and returns how long the caller must wait before using it
    (0.0 when a token was available). Reservations may drive the balance negative, so concurrent
    callers queue fairly instead of all waking at once.
    """

    __slots__ = ("_tokens", "_updated", "limit")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(
                float(self.limit.burst), self._tokens + (now - self._updated) * self.limit.rate
            )
            self._updated = now

    def available(self, now: float) -> float:
        """Tokens available at ``now`` (negative while reservations are outstanding)."""
        self._refill(now)
        return self._tokens

    def try_take(self, now: float) -> float:
        """Take a token if one is available; else take nothing and return the seconds to wait."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.limit.rate

    def reserve(self, now: float) -> float:
        """Take a token, possibly in the future; return the seconds until it is usable."""
        self._refill(now)
        self._tokens -= 1.0
        if self._tokens >= 0.0:
            return 0.0
        return -self._tokens / self.limit.rate

    def drain(self, now: float, seconds: float) -> None:
        """Empty the bucket and push refills ``seconds`` into the future (after a 429)."""
        self._refill(now)
        self._tokens = min(self._tokens, 0.0) - seconds * self.limit.rate


class Governor(Protocol):
    """Spends rate-limit budget before a Fly call. Implementations: :class:`LocalGovernor` (one
    process) and ``scaler.loop.governor.RedisGovernor`` (a budget shared by every scaler
    replica)."""

    async def acquire(self, action: str, scope: str) -> float:
        """Wait until one call of ``action`` on ``scope`` fits the limit; return seconds waited."""
        ...

    def penalize(self, action: str, scope: str, retry_after: float | None) -> None:
        """Fly answered 429: stop spending on this bucket for ``retry_after`` (or one interval)."""
        ...


PRUNE_MIN = 1024
"""A local governor forgets its full buckets once it holds this many (or twice as many as were
left at the last pruning): amortized O(1) per new bucket."""


class LocalGovernor:
    """In-process token buckets per (action, scope), with an injectable clock and sleep."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        limits: Callable[[str], Limit] = client_limit_for,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._limits = limits
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._prune_at = PRUNE_MIN

    def bucket(self, action: str, scope: str) -> TokenBucket:
        """The bucket for one (action, scope), created full on first use."""
        key = (action, scope)
        b = self._buckets.get(key)
        if b is None:
            now = self._clock()
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
            b = self._buckets[key] = TokenBucket(self._limits(action), now)
        return b

    def _prune(self, now: float) -> None:
        """Forget the buckets that are full again: one made anew is the same. Scopes are per
        machine for most actions, and per-job machines come and go, so without this the
        buckets would grow with every machine ever called."""
        self._buckets = {k: b for k, b in self._buckets.items()
                         if b.available(now) < b.limit.burst}
        self._prune_at = max(PRUNE_MIN, 2 * len(self._buckets))

    async def acquire(self, action: str, scope: str) -> float:
        wait = self.bucket(action, scope).reserve(self._clock())
        if wait > 0:
            await self._sleep(wait)
        return wait

    def penalize(self, action: str, scope: str, retry_after: float | None) -> None:
        b = self.bucket(action, scope)
        b.drain(self._clock(), retry_after if retry_after else 1.0 / b.limit.rate)
