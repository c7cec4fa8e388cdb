"""Operations on volumes and snapshots, and the platform's regions."""

from __future__ import annotations

from scaler.fly._operations.call import Call, _model, _models, _nothing, _q, _seg, _v
from scaler.fly.models import (
    CreateVolumeRequest,
    ExtendVolumeRequest,
    ExtendVolumeResponse,
    RegionsResponse,
    UpdateVolumeRequest,
    Volume,
    VolumeSnapshot,
)
from scaler.fly.retry import Safety

__all__ = [
    "create_snapshot",
    "create_volume",
    "delete_volume",
    "extend_volume",
    "get_volume",
    "list_regions",
    "list_snapshots",
    "list_volumes",
    "update_volume",
]


def create_volume(
    app_name: str,
    name: str,
    *,
    region: str | None = None,
    size_gb: int | None = None,
    encrypted: bool | None = None,
    require_unique_zone: bool | None = None,
    snapshot_id: str | None = None,
    source_volume_id: str | None = None,
    snapshot_retention: int | None = None,
    auto_backup_enabled: bool | None = None,
    fstype: str | None = None,
) -> Call[Volume]:
    """Create a volume (Fly's defaults: 3 GB, encrypted). Not retried on an unknown outcome:
    a second create would make a second volume."""
    body = CreateVolumeRequest(
        name=name, region=region, size_gb=size_gb, encrypted=encrypted,
        require_unique_zone=require_unique_zone, snapshot_id=snapshot_id,
        source_volume_id=source_volume_id, snapshot_retention=snapshot_retention,
        auto_backup_enabled=auto_backup_enabled, fstype=fstype,
    )
    return Call(
        "POST", f"/v1/apps/{_seg(app_name, 'app_name')}/volumes", _model(Volume), Safety.UNSAFE,
        body=body.to_wire(),
    )


def list_volumes(app_name: str, *, summary: bool | None = None) -> Call[list[Volume]]:
    """The app's volumes."""
    return Call(
        "GET", f"/v1/apps/{_seg(app_name, 'app_name')}/volumes", _models(Volume),
        Safety.IDEMPOTENT, params=_q(summary=summary),
    )


def get_volume(app_name: str, volume_id: str) -> Call[Volume]:
    """One volume."""
    return Call("GET", _v(app_name, volume_id), _model(Volume), Safety.IDEMPOTENT)


def update_volume(
    app_name: str,
    volume_id: str,
    *,
    snapshot_retention: int | None = None,
    auto_backup_enabled: bool | None = None,
) -> Call[Volume]:
    """Change a volume's snapshot settings."""
    body = UpdateVolumeRequest(
        snapshot_retention=snapshot_retention, auto_backup_enabled=auto_backup_enabled
    )
    return Call(
        "PUT", _v(app_name, volume_id), _model(Volume), Safety.IDEMPOTENT, body=body.to_wire()
    )


def delete_volume(app_name: str, volume_id: str) -> Call[Volume]:
    """Destroy a volume (answers it with ``state: "destroyed"``)."""
    return Call("DELETE", _v(app_name, volume_id), _model(Volume), Safety.IDEMPOTENT)


def extend_volume(app_name: str, volume_id: str, size_gb: int) -> Call[ExtendVolumeResponse]:
    """Grow a volume to ``size_gb`` (an absolute size, so repeating it is harmless)."""
    return Call(
        "PUT", _v(app_name, volume_id, "/extend"), _model(ExtendVolumeResponse),
        Safety.IDEMPOTENT, body=ExtendVolumeRequest(size_gb=size_gb).to_wire(),
    )


def list_snapshots(app_name: str, volume_id: str) -> Call[list[VolumeSnapshot]]:
    """A volume's snapshots."""
    return Call(
        "GET", _v(app_name, volume_id, "/snapshots"), _models(VolumeSnapshot), Safety.IDEMPOTENT
    )


def create_snapshot(app_name: str, volume_id: str) -> Call[None]:
    """Take an on-demand snapshot (the answer has no documented shape)."""
    return Call("POST", _v(app_name, volume_id, "/snapshots"), _nothing, Safety.UNSAFE)


# --- platform -----------------------------------------------------------------------------------


def list_regions() -> Call[RegionsResponse]:
    """Fly's regions and the one nearest to the caller."""
    return Call("GET", "/v1/platform/regions", _model(RegionsResponse), Safety.IDEMPOTENT)
