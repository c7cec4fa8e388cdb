"""The scaler's configuration: one validated, frozen :class:`Settings`, from a TOML file plus env.

Load it with :func:`load_settings` (a file) or :func:`parse_settings` (a dict). Every problem is
reported at once in one :class:`ConfigError`, one line each, naming the key path, the value given
and what would be accepted. Secrets (the Fly token, the Redis password, enqueue tokens) are
:class:`scaler.secret.Secret` values, registered with the log redactor, and never printed.

Environment overrides (they win over the file):

- ``FLY_API_TOKEN``: the Fly API token (the only way besides ``fly.token_file``; a literal token in
  the file is refused so config files can be committed).
- ``FLY_API_URL``: ``fly.api_url``.
- ``REDIS_URL``: ``redis.url``.
- ``SCALER_ENQUEUE_TOKENS``: comma-separated bearer tokens of the HTTP enqueue API (or
  ``http.tokens_file``).
- ``SCALER_CONFIG``: the config file used when no path is given.

Durations are ``"500ms"``, ``"30s"``, ``"15m"``, ``"2h"``, ``"1h30m"`` or a number of seconds; they
are stored as float seconds. A complete, commented example ships as ``scaler/examples/scaler.toml``.
"""

from __future__ import annotations

import difflib
import os
import re
import signal
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
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
    PrivateAttr,
    StrictBool,
    StrictStr,
    ValidationError,
    model_validator,
)

from scaler.durations import format_duration, parse_duration
from scaler.fly.models import Guest
from scaler.fly.sizing import SizingError, guest_for
from scaler.secret import MASK, Secret
from scaler.telemetry.costs import MONTHLY_USD

__all__ = [
    "ConfigError",
    "FlySettings",
    "GuestSpec",
    "HttpSettings",
    "PoolSpec",
    "PrometheusSettings",
    "RedisSettings",
    "ScalerSettings",
    "Settings",
    "default_config_path",
    "load_settings",
    "mask_url",
    "parse_settings",
]

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
        return url
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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections -----------------------------------------------------------------------------------


class FlySettings(_Model):
    """``[fly]``: the Machines API.

    - ``api_url``: base URL of the Machines API (default ``https://api.machines.dev``; env
      ``FLY_API_URL``). Point it at ``scaler local-api`` for local runs.
    - ``token_file``: a file holding the API token (e.g. a mounted secret). The token itself comes
      from env ``FLY_API_TOKEN`` (wins) or this file; a literal ``token`` in the config is refused.
    - ``org_slug``: the Fly organization (default ``personal``).
    - ``timeout``: per-request timeout (default ``30s``).
    """

    api_url: HttpUrl = "https://api.machines.dev"
    token: SecretValue | None = None
    token_file: Path | None = None
    org_slug: StrictStr = "personal"
    timeout: PositiveDuration = 30.0


class RedisSettings(_Model):
    """``[redis]``: where the queues live and the scaler keeps its own state.

    - ``url``: the Redis URL (default ``redis://127.0.0.1:6379/0``; env ``REDIS_URL``). It is a
      :class:`Secret` because it may carry a password: connect with ``url.get_secret_value()``,
      print :attr:`safe_url`.
    - ``namespace``: the dramatiq ``RedisBroker`` namespace the apps enqueue into (``dramatiq``).
    - ``prefix``: prefix of the scaler's own keys (claims, leases, rate buckets): ``fly-scaler``.
    """

    url: Annotated[SecretValue, AfterValidator(_redis_url)] = Secret("redis://127.0.0.1:6379/0")
    namespace: StrictStr = "dramatiq"
    prefix: StrictStr = "fly-scaler"

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for logs and ``check-config``."""
        return mask_url(self.url.get_secret_value())

    @property
    def password(self) -> str | None:
        """The password in the URL, if any (to register with the log redactor)."""
        try:
            return urlsplit(self.url.get_secret_value()).password
        except ValueError:
            return None


class ScalerSettings(_Model):
    """``[scaler]``: the scheduler itself.

    - ``id``: written into every machine's metadata; machines of other ids are never touched, so
      two scaler deployments can share a Fly app (default ``fly-scaler``).
    - ``max_machines``: global cap on live machines over all pools (default 100).
    - ``resync_interval``: the longest time between ticks when no event wakes the loop (``5s``).
    - ``tick_deadline``: a tick that takes longer is abandoned and reported (``10s``).
    - ``orphan_grace``: an orphaned machine is destroyed only after being marked this long (``2m``).
    - ``leader_ttl``: the leader lease's TTL; renewed every third of it (``15s``).
    - ``max_concurrent_calls``: Fly API calls in flight at once (8).
    - ``shared_rate_limits``: share the rate-limit budget between replicas through Redis (true).
    - ``claim_grace``: how long a claimed job may have no visible machine (Fly's listing lags a
      create) before the scaler re-creates it or gives the job back (``10s``).
    - ``event_wakeups``: tick as soon as a message is enqueued (Redis keyspace notifications and
      the enqueue middleware's publish); off, only the resync timer wakes the loop (true).
    """

    id: Annotated[StrictStr, _pattern(_SCALER_ID, "scaler id: letters, digits, '.', '_', '-'")] = (
        "fly-scaler"
    )
    max_machines: NonNegInt = 100
    resync_interval: PositiveDuration = 5.0
    tick_deadline: PositiveDuration = 10.0
    orphan_grace: Duration = 120.0
    leader_ttl: PositiveDuration = 15.0
    max_concurrent_calls: PositiveInt = 8
    shared_rate_limits: StrictBool = True
    event_wakeups: StrictBool = True
    claim_grace: PositiveDuration = 10.0


class AppSettings(_Model):
    """``[apps.<name>]``: per-app settings. ``max_machines``: cap over all pools of that app."""

    max_machines: NonNegInt | None = None


class HttpSettings(_Model):
    """``[http]``: the scaler's HTTP port (``/metrics``, ``/healthz``, ``/readyz``, enqueue API).

    - ``host`` (``0.0.0.0``) and ``port`` (9090).
    - ``tokens_file``: bearer tokens of the enqueue API, one per line. Env
      ``SCALER_ENQUEUE_TOKENS`` (comma separated) wins. No tokens: the enqueue API is disabled.
    """

    host: StrictStr = "0.0.0.0"
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 9090
    tokens_file: Path | None = None
    enqueue_tokens: tuple[SecretValue, ...] = ()


class PrometheusSettings(_Model):
    """``[prometheus]``: for pools with ``scale_on = "prometheus"``.

    - ``url``: the Prometheus server (no default; required by such pools).
    - ``timeout``: per-query timeout (``5s``).
    """

    url: HttpUrl | None = None
    timeout: PositiveDuration = 5.0


class GuestSpec(_Model):
    """``guest = { cpus = 1, memory_mb = 256, cpu_kind = "shared" }``: an explicit machine size
    (validated by ``scaler.fly.sizing``); any key left out comes from ``size`` or the default."""

    cpus: PositiveInt | None = None
    memory_mb: PositiveInt | None = None
    cpu_kind: StrictStr | None = None


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
PER_JOB_KEYS = ("max_launches",)


class PoolSpec(_Model):
    """``[[pools]]``: a kind of machine and the queues it serves.

    Every pool:

    - ``name``: 1-20 of ``[a-z0-9-]`` (it goes into machine names); unique.
    - ``mode``: ``per-job`` (one dedicated ``auto_destroy`` machine per message; default) or
      ``worker`` (a fleet of dramatiq workers sized from a signal, scaled to zero).
    - ``app``: the Fly app the machines are created in.
    - ``queues``: dramatiq queue names served (at least one; a queue belongs to one pool).
    - ``max_machines``: pool cap on live machines (default 10; at most the app and global caps).
    - ``region``: Fly region code, e.g. ``iad`` (default: Fly chooses).
    - ``image``: the machine image (required).
    - ``cmd``, ``entrypoint``: override the image's command / entrypoint.
    - ``env``: environment of the machine (never put the Fly token here: refused).
    - ``size``: a preset such as ``shared-cpu-1x``; ``guest``: ``{cpus, memory_mb, cpu_kind}``.
    - ``max_runtime``: a machine older than this is stopped and its job given back (``15m``).
    - ``boot_timeout``: a machine not started after this is destroyed and retried (``2m``).
    - ``stop_signal`` (``SIGINT``) and ``kill_timeout`` (``30s``): how machines are stopped.
    - ``metadata``: extra machine metadata (string values).
    - ``http_actors``: actor names that the HTTP enqueue API accepts on this pool's queues
      (default none: the queues are closed to HTTP producers).

    Per-job pools only: ``max_launches`` (3): launches of one job (crashes, boot timeouts) before
    the job is dead-lettered.

    Worker pools only:

    - ``min_machines`` (0), ``jobs_per_machine`` (1): worker concurrency.
    - ``idle_timeout`` (``60s``): a worker exits after this long with nothing to do.
    - ``min_lifetime`` (``10m``): but not before it has run this long, so a demand that swings
      around a threshold keeps the machine it bought instead of buying it again every swing.
    - ``warm_machines`` (0): stopped machines kept for a fast start.
    - ``scale_on``: ``depth`` (default; queued messages / jobs_per_machine), ``latency`` (age of
      the oldest message vs ``target_latency``, default ``30s``) or ``prometheus`` (``query``'s
      value / ``target_per_machine``; needs ``[prometheus] url``).
    """

    name: PoolName
    mode: Literal["per-job", "worker"] = "per-job"
    app: AppName
    queues: tuple[QueueName, ...]
    max_machines: NonNegInt = 10
    region: StrictStr | None = None
    image: StrictStr
    cmd: tuple[StrictStr, ...] | None = None
    entrypoint: tuple[StrictStr, ...] | None = None
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    size: StrictStr | None = None
    guest_spec: GuestSpec | None = Field(default=None, alias="guest")
    max_runtime: PositiveDuration = 900.0
    boot_timeout: PositiveDuration = 120.0
    max_launches: PositiveInt = 3
    stop_signal: StrictStr = "SIGINT"
    kill_timeout: Duration = 30.0
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    http_actors: tuple[Annotated[StrictStr, _pattern(_ACTOR_NAME, "actor name")], ...] = ()
    min_machines: NonNegInt = 0
    jobs_per_machine: PositiveInt = 1
    idle_timeout: PositiveDuration = 60.0
    min_lifetime: Duration = 600.0
    warm_machines: NonNegInt = 0
    scale_on: Literal["depth", "latency", "prometheus"] = "depth"
    target_latency: PositiveDuration = 30.0
    query: StrictStr | None = None
    target_per_machine: PositiveFloat | None = None
    scale_tolerance: Annotated[float, Field(ge=0.0, le=1.0, strict=False)] = 0.1

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _guest: Guest | None = PrivateAttr(default=None)

    @property
    def guest(self) -> Guest:
        """The validated machine size from ``size`` and ``guest`` (default ``shared-cpu-1x``)."""
        assert self._guest is not None  # set by validation
        return self._guest

    @property
    def is_worker(self) -> bool:
        """Whether this is a worker pool (else per-job)."""
        return self.mode == "worker"

    @model_validator(mode="after")
    def _check(self) -> PoolSpec:
        given = {PoolSpec.model_fields[f].alias or f for f in self.model_fields_set}
        problems, guest = _pool_problems(self.model_dump(by_alias=True), given)
        if problems:
            raise _Problems(problems)
        object.__setattr__(self, "stop_signal", _signal_name(self.stop_signal))
        self._guest = guest
        return self


def _signal_name(value: str) -> str:
    sig = value.upper()
    return sig if sig.startswith("SIG") else "SIG" + sig


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pool_problems(pool: Mapping[str, Any], given: set[str]) -> tuple[_Found, Guest | None]:
    """Checks across the keys of one pool, tolerant of wrongly typed values (which are reported
    elsewhere), so they also run on a pool that failed type validation. Returns the guest too."""
    defaults = {
        n: f.get_default(call_default_factory=True) for n, f in PoolSpec.model_fields.items()
    }

    def get(key: str) -> Any:
        return pool.get(key, defaults.get(key))

    problems: _Found = []
    queues = get("queues")
    if isinstance(queues, list | tuple):
        if not queues:
            problems.append(
                (("queues",), 'a pool needs at least one queue, e.g. queues = ["jobs"]')
            )
        for q in queues:
            if isinstance(q, str) and q[-3:] in (".DQ", ".XQ"):
                kind = "delay" if q.endswith(".DQ") else "dead-letter"
                problems.append(
                    (
                        ("queues",),
                        f"{q!r} is dramatiq's {kind} queue of {q[:-3]!r}; list {q[:-3]!r} "
                        "instead (the scaler watches both)",
                    )
                )
        dupes = sorted({q for q in queues if isinstance(q, str) and queues.count(q) > 1})
        if dupes:
            problems.append((("queues",), f"queue {dupes[0]!r} is listed twice"))
    mode = get("mode")
    if mode == "per-job":
        for key in sorted(given & set(WORKER_KEYS)):
            problems.append(
                ((key,), f'{key!r} applies to worker pools only; remove it or set mode = "worker"')
            )
    elif mode == "worker":
        for key in sorted(given & set(PER_JOB_KEYS)):
            problems.append(
                (
                    (key,),
                    f'{key!r} applies to per-job pools only; remove it or set mode = "per-job"',
                )
            )
        cap = get("max_machines")
        for key in ("min_machines", "warm_machines"):
            n = get(key)
            if _is_int(n) and _is_int(cap) and n > cap:
                problems.append(((key,), f"{n} is above max_machines = {cap}; lower it"))
        scale_on = get("scale_on")
        if scale_on == "prometheus":
            if not get("query"):
                problems.append(
                    (
                        ("query",),
                        'scale_on = "prometheus" needs a PromQL query, e.g. '
                        'query = "sum(my_backlog)"',
                    )
                )
            if get("target_per_machine") is None:
                problems.append(
                    (
                        ("target_per_machine",),
                        'scale_on = "prometheus" needs '
                        "target_per_machine, the query value one machine handles",
                    )
                )
        else:
            for key in ("query", "target_per_machine"):
                if key in given:
                    problems.append(
                        (
                            (key,),
                            f'{key!r} is only used with scale_on = "prometheus" '
                            f"(scale_on is {scale_on!r})",
                        )
                    )
        if "target_latency" in given and scale_on != "latency":
            problems.append(
                (
                    ("target_latency",),
                    "'target_latency' is only used with scale_on = "
                    f'"latency" (scale_on is {scale_on!r})',
                )
            )
    env = get("env")
    if isinstance(env, Mapping):
        for key in env:
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                problems.append((("env", str(key)), "not a valid environment variable name"))
            elif key == "FLY_API_TOKEN":
                problems.append(
                    (
                        ("env", key),
                        "the Fly token must never reach a machine; remove it "
                        "(runners do not need it)",
                    )
                )
    sig = get("stop_signal")
    if isinstance(sig, str) and _signal_name(sig) not in _SIGNALS:
        problems.append(
            (
                ("stop_signal",),
                f"{sig!r} is not a known stop signal; use one of {', '.join(_SIGNALS)}",
            )
        )
    guest, guest_problems = _resolve_guest(get("size"), get("guest"))
    problems.extend(guest_problems)
    return problems, guest


def _resolve_guest(size: Any, spec: Any) -> tuple[Guest | None, _Found]:
    if isinstance(spec, BaseModel):
        spec = spec.model_dump()
    spec = spec if isinstance(spec, Mapping) else {}
    args = {k: spec.get(k) for k in ("cpus", "memory_mb", "cpu_kind")}
    typed = (
        (size is None or isinstance(size, str))
        and all(args[k] is None or _is_int(args[k]) for k in ("cpus", "memory_mb"))
        and (args["cpu_kind"] is None or isinstance(args["cpu_kind"], str))
    )
    if not typed:
        return None, []  # the type errors are reported by validation
    try:
        guest = guest_for(
            size=size,
            cpus=args["cpus"],
            memory_mb=args["memory_mb"],
            cpu_kind=args["cpu_kind"],
            field="guest",
        )
    except SizingError as exc:
        field = exc.field or "guest"
        # the preset is the pool's own `size` key, not a key of `guest`
        path: tuple[str | int, ...] = (
            ("size",) if field == "guest.size" else tuple(field.split("."))
        )
        text = str(exc)
        if text.startswith(field + "="):
            text = text[len(field) + 1 :]
        return None, [(path, text)]
    return guest, []


class Settings(_Model):
    """The whole configuration. Sections: ``fly``, ``redis``, ``scaler``, ``apps``, ``http``,
    ``prometheus``, ``costs`` (USD per second by preset name, overriding
    ``scaler.telemetry.costs``) and ``pools``. See each section's class for its keys."""

    fly: FlySettings = Field(default_factory=FlySettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    scaler: ScalerSettings = Field(default_factory=ScalerSettings)
    apps: dict[AppName, AppSettings] = Field(default_factory=dict)
    http: HttpSettings = Field(default_factory=HttpSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    costs: dict[StrictStr, NonNegFloat] = Field(default_factory=dict)
    pools: tuple[PoolSpec, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems = _cross_problems(self.model_dump(by_alias=True))
        if problems:
            raise _Problems(problems)
        return self

    def pool(self, name: str) -> PoolSpec:
        """The pool called ``name``; ``KeyError`` naming the known pools otherwise."""
        for p in self.pools:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.pools) or "none"
        raise KeyError(f"no pool named {name!r} (pools: {known})")

    def app_cap(self, app: str) -> int | None:
        """The ``[apps.<app>] max_machines`` cap, or ``None`` when that app has none."""
        a = self.apps.get(app)
        return a.max_machines if a else None

    def secrets(self) -> list[str]:
        """Every secret string in the settings (to register with the log redactor)."""
        out = [t.get_secret_value() for t in self.http.enqueue_tokens]
        if self.fly.token:
            out.append(self.fly.token.get_secret_value())
        if self.redis.password:
            out.append(self.redis.password)
        return [s for s in out if s]

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked (the Redis URL's password too)."""
        data = self.model_dump(mode="json", by_alias=True)
        data["redis"]["url"] = self.redis.safe_url
        data["fly"]["token"] = MASK if self.fly.token else None
        data["http"]["enqueue_tokens"] = len(self.http.enqueue_tokens)
        for pool, raw in zip(self.pools, data["pools"], strict=True):
            raw["guest"] = _guest_dict(pool.guest)
        return data

    def describe(self) -> str:
        """What was understood, for humans (``scaler check-config``). Never contains secrets."""
        d = format_duration
        s = self.scaler
        lines = [
            f"fly:        {self.fly.api_url}  org={self.fly.org_slug}"
            f"  timeout={d(self.fly.timeout)}  token={'set' if self.fly.token else 'NOT SET'}",
            f"redis:      {self.redis.safe_url}  namespace={self.redis.namespace}"
            f"  prefix={self.redis.prefix}",
            f"scaler:     id={s.id}  max_machines={s.max_machines}  resync={d(s.resync_interval)}"
            f"  tick_deadline={d(s.tick_deadline)}  orphan_grace={d(s.orphan_grace)}"
            f"  leader_ttl={d(s.leader_ttl)}  max_concurrent_calls={s.max_concurrent_calls}"
            f"  shared_rate_limits={'yes' if s.shared_rate_limits else 'no'}"
            f"  event_wakeups={'yes' if s.event_wakeups else 'no'}"
            f"  claim_grace={d(s.claim_grace)}",
            f"http:       {self.http.host}:{self.http.port}"
            f"  enqueue_tokens={len(self.http.enqueue_tokens)}",
            f"prometheus: {self.prometheus.url or 'none'}",
        ]
        for app, a in sorted(self.apps.items()):
            lines.append(f"app {app}: max_machines={a.max_machines}")
        if self.costs:
            lines.append(
                "costs:      " + "  ".join(f"{k}={v:g}/s" for k, v in sorted(self.costs.items()))
            )
        lines.append(f"pools ({len(self.pools)}):")
        for p in self.pools:
            line = (
                f"  {p.name}: {p.mode}  app={p.app}  queues={','.join(p.queues)}"
                f"  max_machines={p.max_machines}  region={p.region or 'any'}  image={p.image}"
                f"  guest={_guest_text(p.guest)}  max_runtime={d(p.max_runtime)}"
                f"  boot_timeout={d(p.boot_timeout)}"
            )
            if p.is_worker:
                line += (
                    f"  min={p.min_machines}  warm={p.warm_machines}"
                    f"  jobs_per_machine={p.jobs_per_machine}  idle_timeout={d(p.idle_timeout)}"
                    f"  scale_on={p.scale_on}"
                )
            else:
                line += f"  max_launches={p.max_launches}"
            lines.append(line)
        return "\n".join(lines)


def _guest_dict(guest: Guest) -> dict[str, Any]:
    return {"cpu_kind": guest.cpu_kind, "cpus": guest.cpus, "memory_mb": guest.memory_mb}


def _guest_text(guest: Guest) -> str:
    return f"{guest.cpus} {guest.cpu_kind} CPU, {guest.memory_mb} MB"


# --- cross-section checks (tolerant of bad types, so they run on raw data too) -------------------


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _cross_problems(data: Mapping[str, Any]) -> _Found:
    problems: _Found = []
    global_cap = _table(data, "scaler").get(
        "max_machines", ScalerSettings.model_fields["max_machines"].default
    )
    apps = _table(data, "apps")
    pools = data.get("pools")
    if not isinstance(pools, list | tuple):
        pools = []
    prom = _table(data, "prometheus")
    names: dict[str, int] = {}
    queues: dict[str, tuple[int, str]] = {}
    used_apps: set[str] = set()
    default_cap = PoolSpec.model_fields["max_machines"].default
    for i, pool in enumerate(pools):
        if not isinstance(pool, Mapping):
            continue
        name = pool.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    (
                        ("pools", i, "name"),
                        f"{name!r} is already the name of "
                        f"pools[{names[name]}]; pool names must be unique",
                    )
                )
            else:
                names[name] = i
        qs = pool.get("queues")
        if isinstance(qs, list | tuple):
            for q in dict.fromkeys(x for x in qs if isinstance(x, str)):
                if q in queues:
                    j, other = queues[q]
                    problems.append(
                        (
                            ("pools", i, "queues"),
                            f"queue {q!r} is already served by "
                            f"pool {other!r} (pools[{j}]); one queue belongs to one pool",
                        )
                    )
                else:
                    queues[q] = (i, str(name))
        cap = pool.get("max_machines", default_cap)
        app = pool.get("app")
        if isinstance(app, str):
            used_apps.add(app)
        if _is_int(cap) and _is_int(global_cap) and cap > global_cap:
            problems.append(
                (
                    ("pools", i, "max_machines"),
                    f"{cap} is above scaler.max_machines ="
                    f" {global_cap}, so it can never be reached; lower it or raise "
                    "scaler.max_machines",
                )
            )
        app_cfg = apps.get(app) if isinstance(app, str) else None
        app_cap = app_cfg.get("max_machines") if isinstance(app_cfg, Mapping) else None
        if _is_int(cap) and _is_int(app_cap) and cap > app_cap:
            problems.append(
                (
                    ("pools", i, "max_machines"),
                    f"{cap} is above apps.{app}."
                    f"max_machines = {app_cap}, so it can never be reached; lower one",
                )
            )
        if pool.get("scale_on") == "prometheus" and not prom.get("url"):
            problems.append(
                (
                    ("pools", i, "scale_on"),
                    '"prometheus" needs [prometheus] url = "http://prometheus:9090"',
                )
            )
    for size in _table(data, "costs"):
        if size not in MONTHLY_USD:
            hint = (
                _did_you_mean(str(size), list(MONTHLY_USD))
                or " (use a preset name such as 'shared-cpu-1x' or 'performance-2x')"
            )
            problems.append((("costs", size), f"unknown size{hint}"))
    for app, cfg in apps.items():
        if not isinstance(cfg, Mapping):
            continue
        cap = cfg.get("max_machines")
        if _is_int(cap) and _is_int(global_cap) and cap > global_cap:
            problems.append(
                (
                    ("apps", app, "max_machines"),
                    f"{cap} is above scaler.max_machines"
                    f" = {global_cap}, so it can never be reached; lower it",
                )
            )
        if app not in used_apps:
            hint = _did_you_mean(str(app), sorted(used_apps))
            problems.append(
                (
                    ("apps", app),
                    f"no pool uses app {app!r}{hint}; remove the section or fix the name",
                )
            )
    return problems


# --- errors -------------------------------------------------------------------------------------

_SECRET_PATHS = {("fly", "token"), ("redis", "url"), ("http", "enqueue_tokens")}


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
                text = f'"{text}"'
            out += f".{text}" if out else text
    return out or "(top level)"


def _section(loc: tuple[str | int, ...]) -> str:
    if not loc:
        return "the top level"
    if len(loc) == 2 and loc[0] == "pools" and isinstance(loc[1], int):
        return f"[[pools]] #{loc[1] + 1}"
    if len(loc) == 2 and loc[0] == "apps":
        return f"[apps.{loc[1]}]"
    if len(loc) == 1:
        return f"[{loc[0]}]"
    return _path(loc)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is not None and type(None) in get_args(tp):
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    tp: Any = Settings
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                field = next((f for f in tp.model_fields.values() if f.alias == part), None)
            if field is None:
                return None
            tp = field.annotation
        elif origin in (list, tuple):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _show(loc: tuple[str | int, ...], value: Any) -> str:
    if any(loc[: len(p)] == p for p in _SECRET_PATHS):
        if loc[:2] == ("redis", "url") and isinstance(value, str):
            return mask_url(value)
        return "(hidden)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_error(err: Mapping[str, Any], env_sources: Mapping[tuple[str, ...], str]) -> list[str]:
    loc = tuple(p for p in err["loc"] if p != "[key]")
    src = env_sources.get(tuple(str(p) for p in loc))
    where = _path(loc) + (f" (from env {src})" if src else "")
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        model = _model_at(parent)
        allowed = _keys_of(model) if model else []
        if parent == () or (model and key not in allowed):
            hint = _did_you_mean(key, allowed)
            if not hint and allowed:
                hint = f" (known keys: {', '.join(allowed)})"
            return [f"unknown key {key!r} in {_section(parent)}{hint}"]
    if kind == "missing":
        return [f"{where}: required key is missing"]
    ctx = err.get("ctx") or {}
    exc = ctx.get("error")
    if isinstance(exc, _Problems):
        return [f"{_path(loc + sub)}: {msg}" for sub, msg in exc.problems]
    msg = str(err["msg"])
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    msg = msg.replace("valid tuple", "list").replace("valid dictionary", "table")
    if "[key]" in err["loc"]:
        msg = f"bad key: {msg}"
    shown = _show(loc, err.get("input"))
    if shown in msg:
        return [f"{where}: {msg}"]
    return [f"{where}: {msg}; got {shown}"]


# --- loading ------------------------------------------------------------------------------------


def default_config_path(env: Mapping[str, str] = os.environ) -> Path | None:
    """``$SCALER_CONFIG``, else ``./scaler.toml`` if it exists, else ``None`` (defaults + env)."""
    if env.get("SCALER_CONFIG"):
        return Path(env["SCALER_CONFIG"])
    local = Path("scaler.toml")
    return local if local.exists() else None


def _read_secret_file(path: object, where: str, problems: list[str]) -> str | None:
    if not isinstance(path, str):
        return None
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        problems.append(
            f"{where}: cannot read {path!r} ({exc.strerror or exc}); fix the path or "
            "its permissions"
        )
        return None


def _apply_env(
    data: dict[str, Any], env: Mapping[str, str], problems: list[str]
) -> dict[tuple[str, ...], str]:
    """Move secrets and env overrides into ``data``; return which paths came from which env var."""
    sources: dict[tuple[str, ...], str] = {}

    def section(name: str) -> dict[str, Any]:
        sec = data.get(name)
        if sec is None:
            sec = data[name] = {}
        return sec if isinstance(sec, dict) else {}

    fly, redis_, http = section("fly"), section("redis"), section("http")
    if "token" in fly:
        del fly["token"]
        problems.append(
            "fly.token: a literal token in the config file is refused; set env "
            'FLY_API_TOKEN or fly.token_file = "/path/to/token"'
        )
    if "enqueue_tokens" in http:
        del http["enqueue_tokens"]
        problems.append(
            "http.enqueue_tokens: literal tokens in the config file are refused; set "
            "env SCALER_ENQUEUE_TOKENS (comma separated) or http.tokens_file"
        )
    for var, sec, key in (("FLY_API_URL", fly, "api_url"), ("REDIS_URL", redis_, "url")):
        if env.get(var):
            sec[key] = env[var]
            sources[(("fly" if sec is fly else "redis"), key)] = var
    token = env.get("FLY_API_TOKEN") or _read_secret_file(
        fly.get("token_file"), "fly.token_file", problems
    )
    if token:
        fly["token"] = token.strip()
    raw_tokens = env.get("SCALER_ENQUEUE_TOKENS")
    if raw_tokens is None:
        raw_tokens = _read_secret_file(http.get("tokens_file"), "http.tokens_file", problems)
        sep = "\n"
    else:
        sources[("http", "enqueue_tokens")] = "SCALER_ENQUEUE_TOKENS"
        sep = ","
    if raw_tokens:
        http["enqueue_tokens"] = [t.strip() for t in raw_tokens.split(sep) if t.strip()]
    return sources


def parse_settings(data: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Settings:
    """Validate a config mapping (a parsed TOML document) plus env overrides.

    Raises :class:`ConfigError` listing every problem. On success the secrets are registered with
    the log redactor (``scaler.telemetry.logging.register_secret``).
    """
    raw = _deepcopy(data)
    problems: list[str] = []
    sources = _apply_env(raw, env, problems)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        root_checked = any(
            isinstance((e.get("ctx") or {}).get("error"), _Problems) and e["loc"] == ()
            for e in errors
        )
        for err in errors:
            problems.extend(_format_error(err, sources))
        problems.extend(_raw_pool_lines(raw, errors))
        if not root_checked:
            problems.extend(f"{_path(loc)}: {msg}" for loc, msg in _cross_problems(raw))
        raise ConfigError(_dedupe(problems)) from None
    if problems:
        raise ConfigError(problems)
    from scaler.telemetry.logging import register_secret

    for secret in settings.secrets():
        register_secret(secret)
    return settings


def load_settings(path: str | Path | None, env: Mapping[str, str] = os.environ) -> Settings:
    """Read a TOML config file (``None``: ``$SCALER_CONFIG``, or no file: defaults and env only)
    and validate it with :func:`parse_settings`. Raises :class:`ConfigError`."""
    if path is None and env.get("SCALER_CONFIG"):
        path = env["SCALER_CONFIG"]
    if path is None:
        return parse_settings({}, env)
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(
            [
                f"config file {str(p)!r} does not exist; create it (see the example "
                "in scaler/examples/scaler.toml) or pass another path"
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file {str(p)!r}: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None
    try:
        return parse_settings(data, env)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=str(p)) from None


def _raw_pool_lines(raw: Mapping[str, Any], errors: list[Any]) -> list[str]:
    """Cross-key checks of the pools whose own checks did not run (they had type errors)."""
    pools = raw.get("pools")
    if not isinstance(pools, list):
        return []
    failed = {
        e["loc"][1]
        for e in errors
        if len(e["loc"]) >= 2
        and e["loc"][0] == "pools"
        and isinstance(e["loc"][1], int)
        and not isinstance((e.get("ctx") or {}).get("error"), _Problems)
    }
    lines: list[str] = []
    for i in sorted(failed):
        if i < len(pools) and isinstance(pools[i], Mapping):
            found, _ = _pool_problems(pools[i], set(pools[i]))
            lines.extend(f"{_path(('pools', i, *sub))}: {msg}" for sub, msg in found)
    return lines


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deepcopy(v) for v in value]
    return value


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))
