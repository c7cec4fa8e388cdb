"""The request description every operation returns (:class:`Call`) and the helpers that build
one."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from scaler.durations import format_duration
from scaler.fly.models import (
    Machine,
)
from scaler.fly.retry import RetryPolicy, Safety

__all__ = ["NONCE_HEADER", "WAIT_STATES", "Call", "Lookup"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

NONCE_HEADER = "fly-machine-lease-nonce"
WAIT_STATES = ("started", "stopped", "suspended", "destroyed", "failed", "settled")
Params = list[tuple[str, str]]


@dataclass(frozen=True)
class Lookup:
    """How to find a machine whose create had an unknown outcome: a list call and a picker."""

    call: Call[list[Machine]]
    pick: Callable[[list[Machine]], Machine | None]
    by: str


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request, ready to send, plus how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    safety: Safety
    params: Params = field(default_factory=list)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    read_timeout: float | None = None
    lookup: Lookup | None = None
    retry: RetryPolicy | None = None  # overrides the client's policy for this call
    may_exist: bool = False  # a create whose machine an earlier call may have made already
    raw: bool = False  # parse gets the answer's bytes, not decoded JSON (it decodes them itself)


# --- small helpers ------------------------------------------------------------------------------


def _required(value: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _seg(value: str, name: str) -> str:
    return quote(_required(value, name), safe="")


def _m(app_name: str, machine_id: str, tail: str = "") -> str:
    return f"/v1/apps/{_seg(app_name, 'app_name')}/machines/{_seg(machine_id, 'machine_id')}{tail}"


def _v(app_name: str, volume_id: str, tail: str = "") -> str:
    return f"/v1/apps/{_seg(app_name, 'app_name')}/volumes/{_seg(volume_id, 'volume_id')}{tail}"


def _q(**values: str | int | bool | None) -> Params:
    out: Params = []
    for key, value in values.items():
        if value is None:
            continue
        out.append((key, ("true" if value else "false") if isinstance(value, bool) else str(value)))
    return out


def _nonce(nonce: str | None) -> dict[str, str]:
    return {NONCE_HEADER: nonce} if nonce else {}


def _model(cls: type[M]) -> Callable[[Any], M]:
    def parse(body: Any) -> M:
        return cls.model_validate(body if body is not None else {})

    return parse


def _models(cls: type[M]) -> Callable[[Any], list[M]]:
    def parse(body: Any) -> list[M]:
        return [cls.model_validate(item) for item in (body or [])]

    return parse


def _nothing(body: Any) -> None:
    return None


def _states(state: str | Sequence[str], name: str) -> str:
    states = [state] if isinstance(state, str) else list(state)
    if not states or not all(isinstance(s, str) and s for s in states):
        raise ValueError(f"{name} must be a state name or a list of them, got {state!r}")
    return ",".join(states)


def _duration(value: str | float | None, name: str) -> str | None:
    """Seconds (number) or a Go duration string (``"10s"``) as a Go duration string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not 0 <= value < math.inf:
        raise ValueError(f"{name}={value!r} must be seconds (>= 0) or a duration like '10s'")
    return format_duration(value)
