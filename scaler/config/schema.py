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

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    model_validator,
)

from scaler.config.checks import (
    _cross_problems,
    _guest_dict,
    _guest_text,
    _pool_problems,
    _signal_name,
)
from scaler.config.values import (
    _ACTOR_NAME,
    _SCALER_ID,
    AppName,
    Duration,
    HttpUrl,
    NonNegFloat,
    NonNegInt,
    PoolName,
    PositiveDuration,
    PositiveFloat,
    PositiveInt,
    QueueName,
    SecretValue,
    _Model,
    _pattern,
    _Problems,
    _redis_url,
    mask_url,
)
from scaler.durations import format_duration
from scaler.fly.models import Guest
from scaler.secret import MASK, Secret

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
    - ``orphan_grace``: an orphaned machine is destroyed only after being marked this long (``2m``);
      a machine whose job finished, only if it is still there this long after.
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
    the job is dead-lettered; ``warm_slots`` (0): stopped machines of the pool's template kept to
    run jobs on (a start instead of a create; at most ``max_machines``); ``slot_max_jobs`` and
    ``slot_max_age`` (none): a slot is replaced after that many jobs, or once that old.

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
    warm_slots: NonNegInt = 0
    slot_max_jobs: PositiveInt | None = None
    slot_max_age: PositiveDuration | None = None
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
        problems = _cross_problems(self.model_dump(by_alias=True, exclude_unset=True))
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
