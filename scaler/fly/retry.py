"""When a failed Fly call is tried again, and how long to wait first.

Each operation declares a :class:`Safety`:

- ``IDEMPOTENT``: repeating it cannot do harm (reads; ``stop``, ``start``, ``suspend``, ``cordon``,
  ``destroy``, metadata writes, lease refresh/release, volume update/extend/delete: the second call
  asks for the state the first one already produced). Retried on 429, 408, 5xx and transport
  errors. A repeat may surface a 4xx that the first attempt caused (e.g. 404 after a destroy that
  landed): the caller sees the truth rather than a guess.
- ``WAIT``: like ``IDEMPOTENT``, but 408 means "not in that state yet" and goes back to the caller.
- ``UNSAFE``: repeating could act twice (``restart``, ``signal``, ``update``, lease acquire, app,
  volume and snapshot creation). Retried only when Fly surely did not act: 429 and connection
  failures before the request was sent.
- ``CREATE``: machine creation. Like ``UNSAFE``, but an ambiguous outcome (408, 5xx, or a transport
  error after sending) is resolved by looking the machine up (by name or metadata) before any retry;
  see ``scaler.fly._transport``.

Backoff is exponential with full jitter (``uniform(0, min(cap, base * 2**n))``), honours
``Retry-After`` when Fly sends one, and is bounded by both ``max_attempts`` and ``max_elapsed``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from scaler.fly.errors import (
    FlyError,
    FlyTransportError,
    RateLimited,
    RequestTimeout,
    ServerError,
)

__all__ = ["RetryPolicy", "Safety", "is_ambiguous", "should_retry"]


class Safety(enum.Enum):
    """How safe an operation is to repeat (see the module docstring)."""

    IDEMPOTENT = "idempotent"
    WAIT = "wait"
    UNSAFE = "unsafe"
    CREATE = "create"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds and shape of the backoff. ``max_attempts`` counts the first try."""

    max_attempts: int = 5
    max_elapsed: float = 30.0
    base: float = 0.25
    cap: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts} must be at least 1")
        if self.max_elapsed < 0 or self.base < 0 or self.cap < 0:
            raise ValueError("max_elapsed, base and cap must not be negative")

    def delay(self, retry: int, uniform: Callable[[float, float], float]) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry), full jitter."""
        return uniform(0.0, min(self.cap, self.base * 2.0 ** (retry - 1)))


def is_ambiguous(exc: FlyError) -> bool:
    """True when the request may have been carried out although it failed."""
    if isinstance(exc, FlyTransportError):
        return exc.sent
    # InsufficientCapacity is not a ServerError even when Fly sends it with a 5xx: not ambiguous.
    return isinstance(exc, RequestTimeout | ServerError)


def should_retry(exc: FlyError, safety: Safety) -> bool:
    """Whether ``exc`` may be retried blindly for an operation of this safety."""
    if isinstance(exc, RateLimited):
        return True
    if isinstance(exc, FlyTransportError) and not exc.sent:
        return True
    if safety is Safety.WAIT and isinstance(exc, RequestTimeout):
        return False
    if safety in (Safety.IDEMPOTENT, Safety.WAIT):
        return is_ambiguous(exc)
    return False
