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
    BUDGET_KEY,
    _cross_problems,
    _guest_dict,
    _guest_text,
    _pool_problems,
    _signal_name,
)
from scaler.config.github import GitHubSettings
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
from scaler.policy.budget import Budgets
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
    """``[apps.<name>]``: per-app settings. ``max_machines``: cap over all pools of that app;
    ``budget_per_hour``: USD the app's machines may cost per rolling hour (see ``[costs]``)."""

    max_machines: NonNegInt | None = None
    budget_per_hour: PositiveFloat | None = None


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


class RecordSettings(_Model):
    """``[record]``: record a trace continuously beside ``scaler run`` (docs/replay.md).

    - ``enabled``: record (false).
    - ``path``: the current trace file (``traces/trace.jsonl``); rotated files beside it are named
      ``trace.<UTC time>.jsonl``.
    - ``rotate_every``: start a new file this often (``1h``).
    - ``keep``: rotated files kept; older ones are deleted (24).
    - ``list_interval``: how often the recorder lists machines, spending the same rate budget as
      the scaler (``5s``).
    """

    enabled: StrictBool = False
    path: Path = Path("traces/trace.jsonl")
    rotate_every: PositiveDuration = 3600.0
    keep: PositiveInt = 24
    list_interval: PositiveDuration = 5.0


class GuestSpec(_Model):
    """``guest = { cpus = 1, memory_mb = 256, cpu_kind = "shared" }``: an explicit machine size
    (validated by ``scaler.fly.sizing``); any key left out comes from ``size`` or the default."""

    cpus: PositiveInt | None = None
    memory_mb: PositiveInt | None = None
    cpu_kind: StrictStr | None = None

GITHUB_MAX_RUNTIME_S = 6 * 3600 + 15 * 60
"""A github pool's default ``max_runtime``: GitHub's default job timeout (6 h) plus boot."""


class PoolSpec(_Model):
    """``[[pools]]``: a kind of machine and the queues it serves.

    Every pool:

    - ``name``: 1-20 of ``[a-z0-9-]`` (it goes into machine names); unique.
    - ``mode``: ``per-job`` (one dedicated ``auto_destroy`` machine per message; default),
      ``worker`` (a fleet of dramatiq workers sized from a signal, scaled to zero) or ``github``
      (one ephemeral GitHub Actions runner machine per queued workflow job).
    - ``app``: the Fly app the machines are created in; or ``apps`` (per-job pools): several
      Fly apps, creates spread over their create budgets (exactly one of the two keys).
    - ``queues``: dramatiq queue names served (at least one; a queue belongs to one pool).
    - ``max_machines``: pool cap on live machines (default 10; at most the app and global caps).
    - ``region``: Fly region code, e.g. ``iad`` (default: Fly chooses).
    - ``image``: the machine image (required).
    - ``cmd``, ``entrypoint``: override the image's command / entrypoint.
    - ``env``: environment of the machine (never put the Fly token here: refused).
    - ``size``: a preset such as ``shared-cpu-1x``; ``guest``: ``{cpus, memory_mb, cpu_kind}``.
    - ``max_runtime``: a machine older than this is stopped and its job given back (``15m``;
      ``6h15m`` for github pools: GitHub's default job timeout of 6 hours, plus boot).
    - ``boot_timeout``: a machine not started after this is destroyed and retried (``2m``).
    - ``stop_signal`` (``SIGINT``) and ``kill_timeout`` (``30s``): how machines are stopped.
    - ``metadata``: extra machine metadata (string values).
    - ``http_actors``: actor names that the HTTP enqueue API accepts on this pool's queues
      (default none: the queues are closed to HTTP producers).

    Github pools only: ``labels``, ``repositories``, ``organizations``, ``allow_forks``,
    ``runner_scope``, ``runner_group_id`` (see :mod:`scaler.config.github`).

    ``budget_per_hour``: USD the pool's machines may cost per rolling hour (see ``[costs]``;
    default none).

    Per-job pools only (``max_launches`` applies to github pools too): ``max_launches`` (3):
    launches of one job (crashes, boot timeouts) before
    the job is dead-lettered; ``warm_slots`` (0): stopped machines of the pool's template kept to
    run jobs on (a start instead of a create; at most ``max_machines``); ``slot_max_jobs`` and
    ``slot_max_age`` (none): a slot is replaced after that many jobs, or once that old.

    Worker pools only:

    - ``min_machines`` (0), ``jobs_per_machine`` (1): worker concurrency.
    - ``idle_timeout`` (``60s``): a worker exits after this long with nothing to do.
    - ``min_lifetime`` (``10m``): but not before it has run this long, so a demand that swings
      around a threshold keeps the machine it bought instead of buying it again every swing.
    - ``warm_machines`` (0): stopped machines kept for a fast start.
    - ``warm_suspended`` (0): idle workers suspended (memory kept) instead of stopped, up to this
      many; started before stopped ones. The machine must fit Fly's suspend rules (at most 2 GB).
    - ``scale_on``: ``depth`` (default; queued messages / jobs_per_machine), ``latency`` (age of
      the oldest message vs ``target_latency``, default ``30s``) or ``prometheus`` (``query``'s
      value / ``target_per_machine``; needs ``[prometheus] url``).
    """

    name: PoolName
    mode: Literal["per-job", "worker", "github"] = "per-job"
    app: AppName = ""
    apps: tuple[AppName, ...] = ()
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
    warm_suspended: NonNegInt = 0
    warm_slots: NonNegInt = 0
    slot_max_jobs: PositiveInt | None = None
    slot_max_age: PositiveDuration | None = None
    scale_on: Literal["depth", "latency", "prometheus"] = "depth"
    target_latency: PositiveDuration = 30.0
    query: StrictStr | None = None
    target_per_machine: PositiveFloat | None = None
    scale_tolerance: Annotated[float, Field(ge=0.0, le=1.0, strict=False)] = 0.1
    labels: tuple[StrictStr, ...] = ()
    repositories: tuple[StrictStr, ...] = ()
    organizations: tuple[StrictStr, ...] = ()
    allow_forks: StrictBool = False
    runner_scope: StrictStr | None = None
    runner_group_id: Annotated[int, Field(strict=True, ge=1)] = 1
    budget_per_hour: PositiveFloat | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _guest: Guest | None = PrivateAttr(default=None)

    @property
    def guest(self) -> Guest:
        """The validated machine size from ``size`` and ``guest`` (default ``shared-cpu-1x``)."""
        assert self._guest is not None  # set by validation
        return self._guest

    @property
    def fly_apps(self) -> tuple[str, ...]:
        """Every Fly app the pool's machines run in (``apps``, else ``(app,)``); ``app`` is the
        first of them."""
        return self.apps or (self.app,)

    @property
    def is_worker(self) -> bool:
        """Whether this is a worker pool (else per-job or github: one machine per job)."""
        return self.mode == "worker"

    @property
    def is_github(self) -> bool:
        """Whether this pool runs GitHub Actions jobs (one ephemeral runner machine per job)."""
        return self.mode == "github"

    @property
    def scope(self) -> str:
        """Where a github pool's runners register: ``owner/name`` or an organization login."""
        if self.runner_scope:
            return self.runner_scope
        return (self.repositories or self.organizations)[0]

    @model_validator(mode="before")
    @classmethod
    def _github_runtime(cls, data: Any) -> Any:
        # A CI build routinely outlasts 15 minutes; GitHub itself cancels a job at its
        # timeout-minutes (360 unless the workflow says otherwise), and the runner then exits.
        if isinstance(data, dict) and data.get("mode") == "github" and "max_runtime" not in data:
            return {**data, "max_runtime": GITHUB_MAX_RUNTIME_S}
        return data

    @model_validator(mode="after")
    def _check(self) -> PoolSpec:
        given = {PoolSpec.model_fields[f].alias or f for f in self.model_fields_set}
        problems, guest = _pool_problems(self.model_dump(by_alias=True), given)
        if problems:
            raise _Problems(problems)
        object.__setattr__(self, "stop_signal", _signal_name(self.stop_signal))
        if self.apps:
            object.__setattr__(self, "app", self.apps[0])
        self._guest = guest
        return self

class Settings(_Model):
    """The whole configuration. Sections: ``fly``, ``redis``, ``scaler``, ``apps``, ``http``,
    ``prometheus``, ``costs`` (USD per second by preset name, overriding
    ``scaler.telemetry.costs``, and ``budget_per_hour``: USD all machines may cost per rolling
    hour), ``record`` and ``pools``. See each section's class for its keys."""

    fly: FlySettings = Field(default_factory=FlySettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    scaler: ScalerSettings = Field(default_factory=ScalerSettings)
    apps: dict[AppName, AppSettings] = Field(default_factory=dict)
    http: HttpSettings = Field(default_factory=HttpSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    github: GitHubSettings = Field(default_factory=GitHubSettings)
    costs: dict[StrictStr, NonNegFloat] = Field(default_factory=dict)
    record: RecordSettings = Field(default_factory=RecordSettings)
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

    @property
    def price_overrides(self) -> dict[str, float]:
        """``[costs]`` prices by preset name (USD per second), without ``budget_per_hour``."""
        return {k: v for k, v in self.costs.items() if k != BUDGET_KEY}

    @property
    def budgets(self) -> Budgets:
        """The cost budgets per rolling hour: ``[costs]``, ``[apps.<app>]`` and each pool's."""
        return Budgets(
            global_usd=self.costs.get(BUDGET_KEY),
            per_app={
                app: a.budget_per_hour for app, a in self.apps.items()
                if a.budget_per_hour is not None
            },
            per_pool={
                p.name: p.budget_per_hour for p in self.pools if p.budget_per_hour is not None
            },
        )

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
        out.extend(self.github.secrets())
        return [s for s in out if s]

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked (the Redis URL's password too)."""
        data = self.model_dump(mode="json", by_alias=True)
        data["redis"]["url"] = self.redis.safe_url
        data["fly"]["token"] = MASK if self.fly.token else None
        data["http"]["enqueue_tokens"] = len(self.http.enqueue_tokens)
        for key in ("private_key", "token", "webhook_secret"):
            data["github"][key] = MASK if getattr(self.github, key) else None
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
        if any(p.is_github for p in self.pools):
            g = self.github
            auth = (f"app={g.app_id} installation={g.installation_id}" if g.uses_app
                    else "token")
            lines.append(
                f"github:     {g.api_url}  {auth}"
                f"  webhook_secret={'set' if g.webhook_secret else 'NOT SET'}"
                f"  resync={d(g.resync_interval)}  runner_idle_timeout="
                f"{d(g.runner_idle_timeout)}"
            )
        if self.record.enabled:
            lines.append(f"record:     {self.record.path}  every={d(self.record.rotate_every)}"
                         f"  keep={self.record.keep}")
        for app, a in sorted(self.apps.items()):
            line = f"app {app}: max_machines={a.max_machines}"
            if a.budget_per_hour is not None:
                line += f"  budget_per_hour=${a.budget_per_hour:g}"
            lines.append(line)
        if self.costs:
            parts = [f"{k}={v:g}/s" for k, v in sorted(self.price_overrides.items())]
            if (budget := self.costs.get(BUDGET_KEY)) is not None:
                parts.append(f"budget_per_hour=${budget:g}")
            lines.append("costs:      " + "  ".join(parts))
        lines.append(f"pools ({len(self.pools)}):")
        for p in self.pools:
            line = (
                f"  {p.name}: {p.mode}  app={','.join(p.fly_apps)}  queues={','.join(p.queues)}"
                f"  max_machines={p.max_machines}  region={p.region or 'any'}  image={p.image}"
                f"  guest={_guest_text(p.guest)}  max_runtime={d(p.max_runtime)}"
                f"  boot_timeout={d(p.boot_timeout)}"
            )
            if p.is_worker:
                line += (
                    f"  min={p.min_machines}  warm={p.warm_machines}"
                    f"  warm_suspended={p.warm_suspended}"
                    f"  jobs_per_machine={p.jobs_per_machine}  idle_timeout={d(p.idle_timeout)}"
                    f"  scale_on={p.scale_on}"
                )
            else:
                line += f"  max_launches={p.max_launches}"
            if p.is_github:
                line += (
                    f"  labels={','.join(p.labels)}"
                    f"  repositories={','.join(p.repositories) or '-'}"
                    f"  organizations={','.join(p.organizations) or '-'}"
                    f"  forks={'yes' if p.allow_forks else 'no'}  runner_scope={p.scope}"
                    f"  runner_group_id={p.runner_group_id}"
                )
            if p.budget_per_hour is not None:
                line += f"  budget_per_hour=${p.budget_per_hour:g}"
            lines.append(line)
        return "\n".join(lines)
