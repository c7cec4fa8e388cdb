"""Value types, name rules and the error types of the configuration."""

from __future__ import annotations

import difflib
import re
import signal
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from annotated_types import Ge, Gt
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictStr,
)

from scaler.durations import parse_duration
from scaler.secret import MASK, Secret


class ConfigError(ValueError):
    """The configuration is invalid. ``problems``: one line per problem; ``str()`` joins them."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


_Found = list[tuple[tuple[str | int, ...], str]]  # problems as (key path, message)


class _Problems(ValueError):
    """Problems found by a validator, each as (sub-path, message); expanded by the converter."""

    def __init__(self, problems: _Found) -> None:
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


# --- value types --------------------------------------------------------------------------------


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Gt(0)]
Int = Annotated[int, Field(strict=True)]
NonNegInt = Annotated[int, Field(strict=True), Ge(0)]
PositiveInt = Annotated[int, Field(strict=True), Ge(1)]
NonNegFloat = Annotated[float, Field(strict=True), Ge(0)]
PositiveFloat = Annotated[float, Field(strict=True), Gt(0)]


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value)
    raise ValueError("expected a string")


SecretValue = Annotated[Secret, PlainValidator(_to_secret), PlainSerializer(str)]


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``**********`` (``redis://:****@host:6379/0``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None:
        # A URL mistyped so that nothing parses as its password (``redis//:pw@host``) may still
        # carry one before an ``@``: hide all of that.
        return f"{MASK}@{url.rpartition('@')[2]}" if "@" in url else url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _redis_url(value: Secret) -> Secret:
    raw = value.get_secret_value()
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError(
            "not a valid URL; expected redis://[:password@]host[:port][/db], rediss://... "
            "or unix:///path/to/redis.sock"
        ) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"scheme {parts.scheme!r} is not supported; use redis://, rediss:// or unix://"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("the URL has no host; e.g. redis://127.0.0.1:6379/0")
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    if db and not db.isdigit():
        # redis-py would silently use database 0 here.
        raise ValueError(f"database {db!r} is not a number; e.g. redis://127.0.0.1:6379/0")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL, e.g. https://api.machines.dev")
    return value.rstrip("/")


HttpUrl = Annotated[StrictStr, AfterValidator(_http_url)]

_POOL_NAME = re.compile(r"^[a-z0-9-]{1,20}$")
_APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_QUEUE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9._-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCALER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_ACTOR_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SIGNALS = sorted(
    s.name
    for s in signal.Signals
    if s.name in {"SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL"}
)


def _pattern(rx: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not rx.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return AfterValidator(check)


PoolName = Annotated[StrictStr, _pattern(_POOL_NAME, "pool name: use 1-20 of [a-z0-9-]")]
AppName = Annotated[
    StrictStr, _pattern(_APP_NAME, "Fly app name: lowercase letters, digits and '-'")
]
QueueName = Annotated[
    StrictStr, _pattern(_QUEUE_NAME, "dramatiq queue name: [a-zA-Z_][a-zA-Z0-9._-]*")
]


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

WORKER_KEYS = (
    "min_machines",
    "jobs_per_machine",
    "idle_timeout",
    "min_lifetime",
    "warm_machines",
    "scale_on",
    "target_latency",
    "query",
    "target_per_machine",
    "scale_tolerance",
)
PER_JOB_KEYS = ("max_launches", "warm_slots", "slot_max_jobs", "slot_max_age")
