"""Typed wire models of the Fly Machines API (per the official OpenAPI spec, ``scaler.fly.spec``).

Every model keeps fields it does not know (``extra="allow"``): Fly adds fields often, and a new
field must never break parsing or be dropped when a config is read, changed and sent back. Every
response field is optional because responses are partial (``summary=true``, old API versions) and
often carry ``null``; requests require only what the spec requires. Requests are serialized
with :meth:`FlyModel.to_wire` (``exclude_none=True``), so an unset field is never sent.

Enum-like fields (``restart.policy``, ``guest.cpu_kind``, ``state``, ...) are plain strings: Fly
answers values outside the documented set (``"policy": ""``, ``"cpu_kind": ""``) and a client must
not reject them. The documented values are listed in each field's description.

Known spec/reality differences handled here (``docs/fly-behaviour.md``, "Where the spec and Fly
differ"): ``autostop`` arrives as a bool or a string and is normalised to ``"off" | "stop" |
"suspend"``; stop signals may be numbers; leases come flat or in a ``{"status", "data"}`` envelope
(see :func:`parse_lease`); regions under ``regions`` or ``Regions``.
"""

from __future__ import annotations

import signal as _signal
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "App",
    "AppOrganizationInfo",
    "CacheDrive",
    "CheckStatus",
    "ContainerConfig",
    "CreateAppRequest",
    "CreateAppResponse",
    "CreateLeaseRequest",
    "CreateMachineRequest",
    "CreateVolumeRequest",
    "DNSConfig",
    "DNSForwardRule",
    "DNSOption",
    "EnvFrom",
    "ExitEvent",
    "ExtendVolumeRequest",
    "ExtendVolumeResponse",
    "File",
    "FlyMachineConfig",
    "FlyModel",
    "Guest",
    "HTTPHeader",
    "HTTPOptions",
    "HTTPResponseOptions",
    "ImageRef",
    "Lease",
    "ListAppsResponse",
    "Machine",
    "MachineCheck",
    "MachineEvent",
    "MachineEventRequest",
    "MachineInit",
    "MachineMetrics",
    "MachinePort",
    "MachineProcess",
    "MachineSecret",
    "MachineService",
    "MachineServiceCheck",
    "MachineVersion",
    "Mount",
    "OkResponse",
    "ProxyProtoOptions",
    "Region",
    "RegionsResponse",
    "ReplayCache",
    "Restart",
    "Rootfs",
    "ServiceConcurrency",
    "SignalRequest",
    "Spot",
    "StartResponse",
    "Static",
    "StopConfig",
    "StopRequest",
    "StrippedLease",
    "TLSOptions",
    "UpdateMachineRequest",
    "UpdateMetadataRequest",
    "UpdateVolumeRequest",
    "UpsertMetadataKeyRequest",
    "Volume",
    "VolumeSnapshot",
    "WaitResponse",
    "parse_lease",
    "signal_name",
]


class FlyModel(BaseModel):
    """Base of every wire model: unknown fields are kept; requests drop unset fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body to send: unset (``None``) fields left out, extra fields kept."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


def signal_name(sig: str | int) -> str:
    """A signal as Fly's spec spells it (``"SIGTERM"``); numbers (fly-go sends 9) become names."""
    if isinstance(sig, bool):
        raise ValueError(f"signal={sig!r} is not a signal: use a name like 'SIGTERM' or a number")
    if isinstance(sig, int):
        try:
            return _signal.Signals(sig).name
        except ValueError:
            raise ValueError(f"signal={sig} is not a known signal number") from None
    name = sig.strip().upper()
    return name if name.startswith("SIG") else f"SIG{name}"


# --- config building blocks ---------------------------------------------------------------------


class Guest(FlyModel):
    """``fly.MachineGuest``: the VM size. ``cpu_kind`` is ``shared`` or ``performance``."""

    cpu_kind: str | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    max_memory_mb: int | None = None
    gpus: int | None = None
    gpu_kind: str | None = None
    host_dedication_id: str | None = None
    kernel_args: list[str] | None = None
    persist_rootfs: str | None = None
    required_host_features: list[str] | None = None


class MachineInit(FlyModel):
    """``fly.MachineInit``: what the init process runs (``exec`` replaces entrypoint + cmd)."""

    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    exec: list[str] | None = None
    kernel_args: list[str] | None = None
    swap_size_mb: int | None = None
    tty: bool | None = None


class HTTPHeader(FlyModel):
    """``fly.MachineHTTPHeader``: one header of a check request."""

    name: str | None = None
    values: list[str] | None = None


class ReplayCache(FlyModel):
    """``fly.ReplayCache`` (``type`` is ``cookie`` or ``header``)."""

    allow_bypass: bool | None = None
    name: str | None = None
    path_prefix: str | None = None
    ttl_seconds: int | None = None
    type: str | None = None


class HTTPResponseOptions(FlyModel):
    """``fly.HTTPResponseOptions``."""

    headers: dict[str, Any] | None = None
    pristine: bool | None = None


class HTTPOptions(FlyModel):
    """``fly.HTTPOptions``: per-port HTTP handler options."""

    compress: bool | None = None
    h2_backend: bool | None = None
    headers_read_timeout: int | None = None
    idle_timeout: int | None = None
    replay_cache: list[ReplayCache] | None = None
    response: HTTPResponseOptions | None = None


class TLSOptions(FlyModel):
    """``fly.TLSOptions``: per-port TLS handler options."""

    alpn: list[str] | None = None
    default_self_signed: bool | None = None
    versions: list[str] | None = None


class ProxyProtoOptions(FlyModel):
    """``fly.ProxyProtoOptions``."""

    version: str | None = None


class MachinePort(FlyModel):
    """``fly.MachinePort``: a public port (or ``start_port``..``end_port``) and its handlers."""

    port: int | None = None
    start_port: int | None = None
    end_port: int | None = None
    handlers: list[str] | None = None
    force_https: bool | None = None
    http_options: HTTPOptions | None = None
    tls_options: TLSOptions | None = None
    proxy_proto_options: ProxyProtoOptions | None = None


class ServiceConcurrency(FlyModel):
    """``fly.MachineServiceConcurrency`` (``type`` is ``connections`` or ``requests``)."""

    type: str | None = None
    soft_limit: int | None = None
    hard_limit: int | None = None


class MachineServiceCheck(FlyModel):
    """``fly.MachineServiceCheck``: a check of one service (durations as Go strings, ``"10s"``)."""

    type: str | None = None
    port: int | None = None
    interval: str | None = None
    timeout: str | None = None
    grace_period: str | None = None
    method: str | None = None
    path: str | None = None
    protocol: str | None = None
    headers: list[HTTPHeader] | None = None
    tls_server_name: str | None = None
    tls_skip_verify: bool | None = None


class MachineCheck(MachineServiceCheck):
    """``fly.MachineCheck``: a named top-level check (``kind``: informational or readiness)."""

    kind: str | None = None


class MachineService(FlyModel):
    """``fly.MachineService``: how Fly Proxy routes to the machine.

    ``autostop`` is ``"off" | "stop" | "suspend"``; the API answers booleans for off/stop, which
    are read back as those strings.
    """

    protocol: str | None = None
    internal_port: int | None = None
    ports: list[MachinePort] | None = None
    autostart: bool | None = None
    autostop: str | None = None
    min_machines_running: int | None = None
    concurrency: ServiceConcurrency | None = None
    checks: list[MachineServiceCheck] | None = None
    force_instance_description: str | None = None
    force_instance_key: str | None = None

    @field_validator("autostop", mode="before")
    @classmethod
    def _autostop_from_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "stop" if value else "off"
        return value


class Mount(FlyModel):
    """``fly.MachineMount``: a volume mounted at ``path`` (one volume per machine)."""

    volume: str | None = None
    path: str | None = None
    name: str | None = None
    size_gb: int | None = None
    encrypted: bool | None = None
    extend_threshold_percent: int | None = None
    add_size_gb: int | None = None
    add_size_percent: int | None = None
    min_add_size_gb: int | None = None
    size_gb_limit: int | None = None


class Restart(FlyModel):
    """``fly.MachineRestart``: ``policy`` is ``no``, ``always`` or ``on-failure``."""

    policy: str | None = None
    max_retries: int | None = None


class StopConfig(FlyModel):
    """``fly.StopConfig``: the stop signal (name; numbers accepted) and timeout (``"10s"``)."""

    signal: str | None = None
    timeout: str | None = None

    @field_validator("signal", mode="before")
    @classmethod
    def _signal_number(cls, value: Any) -> Any:
        return signal_name(value) if isinstance(value, int) else value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_number(cls, value: Any) -> Any:
        # fly-go's Duration also accepts a JSON number of nanoseconds.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{int(value)}ns"
        return value


class File(FlyModel):
    """``fly.File``: a file written into the guest (``raw_value`` base64, or a secret)."""

    guest_path: str | None = None
    raw_value: str | None = None
    secret_name: str | None = None
    image_config: str | None = None
    mode: int | None = None


class EnvFrom(FlyModel):
    """``fly.EnvFrom``: an env var filled from a machine field (``id``, ``region``, ...)."""

    env_var: str | None = None
    field_ref: str | None = None


class MachineSecret(FlyModel):
    """``fly.MachineSecret``: an app secret exposed as ``env_var``."""

    env_var: str | None = None
    name: str | None = None


class MachineProcess(FlyModel):
    """``fly.MachineProcess``: an extra process run by init."""

    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    exec: list[str] | None = None
    env: dict[str, str] | None = None
    env_from: list[EnvFrom] | None = None
    ignore_app_secrets: bool | None = None
    secrets: list[MachineSecret] | None = None
    user: str | None = None


class MachineMetrics(FlyModel):
    """``fly.MachineMetrics``: where Fly scrapes the machine's Prometheus metrics."""

    port: int | None = None
    path: str | None = None
    https: bool | None = None


class DNSForwardRule(FlyModel):
    """``fly.dnsForwardRule``."""

    addr: str | None = None
    basename: str | None = None


class DNSOption(FlyModel):
    """``fly.dnsOption``."""

    name: str | None = None
    value: str | None = None


class DNSConfig(FlyModel):
    """``fly.DNSConfig``."""

    dns_forward_rules: list[DNSForwardRule] | None = None
    hostname: str | None = None
    hostname_fqdn: str | None = None
    nameservers: list[str] | None = None
    options: list[DNSOption] | None = None
    searches: list[str] | None = None
    skip_registration: bool | None = None


class Static(FlyModel):
    """``fly.Static``: files served by Fly Proxy from the guest or a Tigris bucket."""

    guest_path: str | None = None
    url_prefix: str | None = None
    index_document: str | None = None
    tigris_bucket: str | None = None


class Rootfs(FlyModel):
    """``fly.MachineRootfs`` (``persist``: never, always, restart)."""

    persist: str | None = None
    size_gb: int | None = None


class CacheDrive(FlyModel):
    """``fly.MachineCacheDrive``."""

    size_mb: int | None = None


class Spot(FlyModel):
    """``fly.MachineSpot``: run on spot capacity up to this fraction of the on-demand price."""

    max_price_fraction: float | None = None


class ContainerConfig(FlyModel):
    """``fly.ContainerConfig`` (nested healthchecks and dependencies kept as plain JSON)."""

    name: str | None = None
    image: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    exec: list[str] | None = None
    env: dict[str, str] | None = None
    env_from: list[EnvFrom] | None = None
    files: list[File] | None = None
    secrets: list[MachineSecret] | None = None
    restart: Restart | None = None
    stop: StopConfig | None = None
    user: str | None = None
    depends_on: list[dict[str, Any]] | None = None
    healthchecks: list[dict[str, Any]] | None = None


class FlyMachineConfig(FlyModel):
    """The spec's ``fly.MachineConfig``, the ``config`` of a machine: everything about it; an
    update replaces it whole.

    Only ``image`` is required by Fly. ``schedule`` is hourly, daily, weekly or monthly;
    ``size`` (a preset name) and ``disable_machine_autostart`` are deprecated but still read.
    """

    image: str | None = None
    env: dict[str, str] | None = None
    guest: Guest | None = None
    init: MachineInit | None = None
    services: list[MachineService] | None = None
    checks: dict[str, MachineCheck] | None = None
    mounts: list[Mount] | None = None
    restart: Restart | None = None
    auto_destroy: bool | None = None
    metadata: dict[str, str] | None = None
    stop_config: StopConfig | None = None
    files: list[File] | None = None
    processes: list[MachineProcess] | None = None
    schedule: str | None = None
    dns: DNSConfig | None = None
    metrics: MachineMetrics | None = None
    statics: list[Static] | None = None
    standbys: list[str] | None = None
    containers: list[ContainerConfig] | None = None
    rootfs: Rootfs | None = None
    cache_drive: CacheDrive | None = None
    spot: Spot | None = None
    size: str | None = None
    disable_machine_autostart: bool | None = None


# --- machines ---------------------------------------------------------------------------------


class ImageRef(FlyModel):
    """``ImageRef``: the image a machine actually runs, resolved to a digest."""

    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    labels: dict[str, str] | None = None


class CheckStatus(FlyModel):
    """``CheckStatus``: the last result of a check (passing, warning, critical)."""

    name: str | None = None
    status: str | None = None
    output: str | None = None
    updated_at: str | None = None


class ExitEvent(FlyModel):
    """How the main process ended (fly-go ``MachineExitEvent``). ``exited_at`` is Unix ms in the
    docs' example but an RFC 3339 string from fly-go, so both are accepted."""

    exit_code: int | None = None
    guest_exit_code: int | None = None
    guest_signal: int | None = None
    oom_killed: bool | None = None
    requested_stop: bool | None = None
    restarting: bool | None = None
    signal: int | None = None
    exited_at: int | str | None = None


class MachineEventRequest(FlyModel):
    """The ``request`` of a machine event (fly-go shape; the spec leaves it untyped)."""

    exit_event: ExitEvent | None = None
    restart_count: int | None = None
    monitor_event: dict[str, Any] | None = Field(default=None, alias="MonitorEvent")


class MachineEvent(FlyModel):
    """One lifecycle event (``launch``, ``start``, ``exit``, ...); ``timestamp`` is Unix **ms**."""

    id: str | None = None
    type: str | None = None
    status: str | None = None
    source: str | None = None
    timestamp: int | None = None
    request: MachineEventRequest | None = None

    @property
    def time(self) -> datetime | None:
        """``timestamp`` as an aware UTC datetime."""
        if self.timestamp is None:
            return None
        return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)


class StrippedLease(FlyModel):
    """The lease summary on a machine listed with ``include_leases``."""

    owner: str | None = None
    description: str | None = None
    expires_at: int | None = None


class Machine(FlyModel):
    """``Machine``. ``instance_id`` changes on every update; ``nonce`` only with ``lease_ttl``."""

    id: str | None = None
    name: str | None = None
    state: str | None = None
    region: str | None = None
    instance_id: str | None = None
    version: str | None = None
    private_ip: str | None = None
    config: FlyMachineConfig | None = None
    incomplete_config: FlyMachineConfig | None = None
    image_ref: ImageRef | None = None
    created_at: str | None = None
    updated_at: str | None = None
    events: list[MachineEvent] | None = None
    checks: list[CheckStatus] | None = None
    nonce: str | None = None
    lease: StrippedLease | None = None
    host_status: str | None = None
    host_features: list[str] | None = None
    cordoned: bool | None = None

    @property
    def metadata(self) -> dict[str, str]:
        """``config.metadata`` (empty when absent)."""
        return dict(self.config.metadata or {}) if self.config else {}


class MachineVersion(FlyModel):
    """One entry of a machine's version history."""

    version: str | None = None
    user_config: FlyMachineConfig | None = None


class WaitResponse(FlyModel):
    """``WaitMachineResponse``: the state reached (docs' example is just ``{"ok": true}``)."""

    ok: bool | None = None
    state: str | None = None
    version: str | None = None
    event_id: str | None = None


class StartResponse(FlyModel):
    """What start answers (``previous_state``; fly-go also reads ``message``/``status``)."""

    previous_state: str | None = None
    migrated: bool | None = None
    new_host: str | None = None
    message: str | None = None
    status: str | None = None


class OkResponse(FlyModel):
    """``{"ok": true}`` style answers (stop, suspend, destroy, cordon, ...); the clients return
    None for those operations, this model is for reading such a body yourself."""

    ok: bool | None = None


class Lease(FlyModel):
    """A machine lease; ``expires_at`` is Unix **seconds**; send ``nonce`` with mutations."""

    nonce: str | None = None
    expires_at: int | None = None
    owner: str | None = None
    description: str | None = None
    version: str | None = None


def parse_lease(body: Any) -> Lease:
    """A lease from either shape Fly uses: the ``{"status", "data": {...}}`` envelope or flat."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict) and "nonce" not in body:
        return Lease.model_validate(body["data"])
    return Lease.model_validate(body)


# --- requests ---------------------------------------------------------------------------------


class CreateMachineRequest(FlyModel):
    """``CreateMachineRequest``. ``lease_ttl`` (seconds) creates the machine already leased."""

    config: FlyMachineConfig
    name: str | None = None
    region: str | None = None
    skip_launch: bool | None = None
    skip_service_registration: bool | None = None
    skip_secrets: bool | None = None
    lease_ttl: int | None = None
    min_secrets_version: int | None = None


class UpdateMachineRequest(CreateMachineRequest):
    """``UpdateMachineRequest``: a whole new config; ``current_version`` guards against races."""

    current_version: str | None = None


class StopRequest(FlyModel):
    """``StopRequest``: ``signal`` name and ``timeout`` as a Go duration (``"10s"``)."""

    signal: str | None = None
    timeout: str | None = None


class SignalRequest(FlyModel):
    """``SignalRequest``."""

    signal: str


class CreateLeaseRequest(FlyModel):
    """``CreateLeaseRequest``: ``ttl`` in seconds."""

    ttl: int | None = None
    description: str | None = None


class UpdateMetadataRequest(FlyModel):
    """``updateMetadataRequest``: replace metadata, guarded by ``machine_version``."""

    metadata: dict[str, str]
    machine_version: str | None = None
    updated_at: str | None = None


class UpsertMetadataKeyRequest(FlyModel):
    """``upsertMetadataKeyRequest``."""

    value: str
    updated_at: str | None = None


class CreateAppRequest(FlyModel):
    """``CreateAppRequest``. Old docs call ``name`` ``app_name``; both are read."""

    name: str
    org_slug: str | None = None
    network: str | None = None
    enable_subdomains: bool | None = None
    idempotency_key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_app_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and "app_name" in data:
            data = dict(data)
            data["name"] = data.pop("app_name")
        return data


class CreateVolumeRequest(FlyModel):
    """``CreateVolumeRequest`` (defaults on Fly's side: 3 GB, encrypted, unique zone)."""

    name: str
    region: str | None = None
    size_gb: int | None = None
    encrypted: bool | None = None
    require_unique_zone: bool | None = None
    unique_zone_app_wide: bool | None = None
    snapshot_id: str | None = None
    source_volume_id: str | None = None
    snapshot_retention: int | None = None
    auto_backup_enabled: bool | None = None
    fstype: str | None = None
    compute: Guest | None = None
    compute_image: str | None = None


class UpdateVolumeRequest(FlyModel):
    """``UpdateVolumeRequest``."""

    snapshot_retention: int | None = None
    auto_backup_enabled: bool | None = None


class ExtendVolumeRequest(FlyModel):
    """``ExtendVolumeRequest``: the new (larger) size."""

    size_gb: int


# --- apps, volumes, regions -------------------------------------------------------------------


class AppOrganizationInfo(FlyModel):
    """The organization an app belongs to."""

    name: str | None = None
    slug: str | None = None
    internal_numeric_id: int | None = None


class App(FlyModel):
    """``App``."""

    id: str | None = None
    name: str | None = None
    status: str | None = None
    organization: AppOrganizationInfo | None = None
    network: str | None = None
    network_cidr: str | None = None
    machine_count: int | None = None
    volume_count: int | None = None
    internal_numeric_id: int | None = None


class ListAppsResponse(FlyModel):
    """``ListAppsResponse``."""

    apps: list[App] = Field(default_factory=list)
    total_apps: int | None = None


class CreateAppResponse(FlyModel):
    """``CreateAppResponse`` (``created_at`` in Unix ms); fly-go's ``?wait`` form returns an App."""

    id: str | None = None
    created_at: int | None = None
    name: str | None = None


class Volume(FlyModel):
    """``Volume``."""

    id: str | None = None
    name: str | None = None
    state: str | None = None
    size_gb: int | None = None
    region: str | None = None
    zone: str | None = None
    encrypted: bool | None = None
    attached_machine_id: str | None = None
    attached_alloc_id: str | None = None
    created_at: str | None = None
    fstype: str | None = None
    block_size: int | None = None
    blocks: int | None = None
    blocks_free: int | None = None
    blocks_avail: int | None = None
    bytes_total: int | None = None
    bytes_used: int | None = None
    snapshot_retention: int | None = None
    auto_backup_enabled: bool | None = None
    host_status: str | None = None
    host_features: list[str] | None = None
    required_host_features: list[str] | None = None
    type: str | None = None
    host_dedication_id: str | None = None


class ExtendVolumeResponse(FlyModel):
    """``ExtendVolumeResponse``."""

    volume: Volume | None = None
    needs_restart: bool | None = None


class VolumeSnapshot(FlyModel):
    """``VolumeSnapshot``."""

    id: str | None = None
    size: int | None = None
    volume_size: int | None = None
    digest: str | None = None
    created_at: str | None = None
    status: str | None = None
    retention_days: int | None = None


class Region(FlyModel):
    """``main.regionRow``: one Fly region."""

    code: str | None = None
    name: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    geo_region: str | None = None
    gateway_available: bool | None = None
    requires_paid_plan: bool | None = None
    deprecated: bool | None = None
    mpg_available: bool | None = None


class RegionsResponse(FlyModel):
    """``main.regionResponse``; the live API was seen answering ``Regions``, read as ``regions``."""

    regions: list[Region] = Field(default_factory=list)
    nearest: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _capital_regions(cls, data: Any) -> Any:
        if isinstance(data, dict) and "regions" not in data and "Regions" in data:
            data = dict(data)
            data["regions"] = data.pop("Regions")
        return data
