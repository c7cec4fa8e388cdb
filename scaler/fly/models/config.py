"""A machine's ``config`` (the spec's ``fly.MachineConfig``) and its building blocks."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from scaler.fly.models.base import FlyModel, signal_name

__all__ = [
    "CacheDrive",
    "ContainerConfig",
    "DNSConfig",
    "DNSForwardRule",
    "DNSOption",
    "EnvFrom",
    "File",
    "FlyMachineConfig",
    "Guest",
    "HTTPHeader",
    "HTTPOptions",
    "HTTPResponseOptions",
    "MachineCheck",
    "MachineInit",
    "MachineMetrics",
    "MachinePort",
    "MachineProcess",
    "MachineSecret",
    "MachineService",
    "MachineServiceCheck",
    "Mount",
    "ProxyProtoOptions",
    "ReplayCache",
    "Restart",
    "Rootfs",
    "ServiceConcurrency",
    "Spot",
    "Static",
    "StopConfig",
    "TLSOptions",
]


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
