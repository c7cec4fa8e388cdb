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

One exception to "every field kept": :mod:`scaler.fly.models.slim` (:class:`ListedMachine`,
:class:`SlimListing`) reads a machine listing into only the fields the scaler's tick needs,
with msgspec, for listings of thousands of machines read every tick.
"""

from __future__ import annotations

from scaler.fly.models.base import (
    FlyModel,
    signal_name,
)
from scaler.fly.models.config import (
    CacheDrive,
    ContainerConfig,
    DNSConfig,
    DNSForwardRule,
    DNSOption,
    EnvFrom,
    File,
    FlyMachineConfig,
    Guest,
    HTTPHeader,
    HTTPOptions,
    HTTPResponseOptions,
    MachineCheck,
    MachineInit,
    MachineMetrics,
    MachinePort,
    MachineProcess,
    MachineSecret,
    MachineService,
    MachineServiceCheck,
    Mount,
    ProxyProtoOptions,
    ReplayCache,
    Restart,
    Rootfs,
    ServiceConcurrency,
    Spot,
    Static,
    StopConfig,
    TLSOptions,
)
from scaler.fly.models.machines import (
    CheckStatus,
    ExitEvent,
    ImageRef,
    Lease,
    Machine,
    MachineEvent,
    MachineEventRequest,
    MachineVersion,
    OkResponse,
    StartResponse,
    StrippedLease,
    WaitResponse,
    parse_lease,
)
from scaler.fly.models.requests import (
    CreateAppRequest,
    CreateLeaseRequest,
    CreateMachineRequest,
    CreateVolumeRequest,
    ExtendVolumeRequest,
    SignalRequest,
    StopRequest,
    UpdateMachineRequest,
    UpdateMetadataRequest,
    UpdateVolumeRequest,
    UpsertMetadataKeyRequest,
)
from scaler.fly.models.resources import (
    App,
    AppOrganizationInfo,
    CreateAppResponse,
    ExtendVolumeResponse,
    ListAppsResponse,
    Region,
    RegionsResponse,
    Volume,
    VolumeSnapshot,
)
from scaler.fly.models.slim import ListedMachine, SlimListing

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
    "ListedMachine",
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
    "SlimListing",
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
