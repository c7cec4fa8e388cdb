"""Request bodies: create, update, stop, signal, leases, metadata, apps, volumes."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from scaler.fly.models.base import FlyModel
from scaler.fly.models.config import FlyMachineConfig, Guest

__all__ = [
    "CreateAppRequest",
    "CreateLeaseRequest",
    "CreateMachineRequest",
    "CreateVolumeRequest",
    "ExtendVolumeRequest",
    "SignalRequest",
    "StopRequest",
    "UpdateMachineRequest",
    "UpdateMetadataRequest",
    "UpdateVolumeRequest",
    "UpsertMetadataKeyRequest",
]


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
