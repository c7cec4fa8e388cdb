"""Apps, volumes, snapshots and regions."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from scaler.fly.models.base import FlyModel

__all__ = [
    "App",
    "AppOrganizationInfo",
    "CreateAppResponse",
    "ExtendVolumeResponse",
    "ListAppsResponse",
    "Region",
    "RegionsResponse",
    "Volume",
    "VolumeSnapshot",
]


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
