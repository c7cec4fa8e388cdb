"""Handlers of the app, volume and platform operations."""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from scaler.local import ids
from scaler.local.clock import wall
from scaler.local.context import Context, Handler, json_response
from scaler.local.errors import APIError, bad_request
from scaler.local.model import AppRecord, VolumeRecord
from scaler.local.validation import check_body, query_bool

__all__ = ["HANDLERS", "REGIONS"]

_APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REGIONS: list[dict[str, Any]] = [
    {"code": code, "name": name, "latitude": lat, "longitude": lon, "gateway_available": True,
     "requires_paid_plan": False, "deprecated": False, "geo_region": geo}
    for code, name, lat, lon, geo in [
        ("ams", "Amsterdam, Netherlands", 52.374, 4.8897, "eu"),
        ("arn", "Stockholm, Sweden", 59.6512, 17.9178, "eu"),
        ("cdg", "Paris, France", 48.8566, 2.3522, "eu"),
        ("dfw", "Dallas, Texas (US)", 32.7767, -96.797, "na"),
        ("ewr", "Secaucus, NJ (US)", 40.7891, -74.0565, "na"),
        ("fra", "Frankfurt, Germany", 50.1109, 8.6821, "eu"),
        ("iad", "Ashburn, Virginia (US)", 39.0438, -77.4874, "na"),
        ("lax", "Los Angeles, California (US)", 34.0522, -118.2437, "na"),
        ("lhr", "London, United Kingdom", 51.5074, -0.1278, "eu"),
        ("nrt", "Tokyo, Japan", 35.6762, 139.6503, "ap"),
        ("ord", "Chicago, Illinois (US)", 41.8781, -87.6298, "na"),
        ("sin", "Singapore, Singapore", 1.3521, 103.8198, "ap"),
        ("sjc", "San Jose, California (US)", 37.3382, -121.8863, "na"),
        ("syd", "Sydney, Australia", -33.8688, 151.2093, "ap"),
        ("yyz", "Toronto, Canada", 43.6532, -79.3832, "na"),
    ]
]


async def list_apps(ctx: Context) -> Response:
    org = ctx.query.get("org_slug")
    if not org:
        raise bad_request("org_slug: required query parameter (e.g. org_slug=personal)")
    apps = [a.to_wire() for a in ctx.store.apps.values() if a.org_slug == org]
    return json_response({"apps": apps, "total_apps": len(apps)})


async def create_app(ctx: Context) -> Response:
    body = await ctx.body()
    name = body.get("name") or body.get("app_name")  # app_name: the legacy key
    body.pop("app_name", None)
    check_body(body, "CreateAppRequest")
    if not name or not isinstance(name, str):
        raise bad_request("name: required (the app name; 'app_name' is accepted too)")
    if not _APP_NAME.match(name):
        raise bad_request(
            f"name: {name!r} is not a valid app name; use lowercase letters, digits and dashes"
        )
    if name in ctx.store.apps:
        raise APIError(422, f"name: app name {name!r} is already taken", "name_taken")
    app = AppRecord(
        id=ids.app_id(),
        name=name,
        org_slug=str(body.get("org_slug") or ctx.config.org_slug),
        network=str(body.get("network") or "default"),
        created_at=wall(),
    )
    ctx.store.apps[name] = app
    # CreateAppResponse {id, created_at ms} plus the App fields fly-go decodes.
    return json_response({**app.to_wire(), "created_at": ids.event_ms(app.created_at)}, 201)


async def show_app(ctx: Context) -> Response:
    return json_response(ctx.store.app(ctx.params["app_name"]).to_wire())


async def delete_app(ctx: Context) -> Response:
    app = ctx.store.app(ctx.params["app_name"])
    live = app.live_machines()
    if live:
        if not query_bool(ctx.query.get("force")):
            raise APIError(
                412,
                f"app has {len(live)} machine(s) that are not destroyed; destroy them first "
                "or pass force=true",
            )
        for m in live:
            ctx.engine.destroy(m, force=True)  # a no-op for one already destroying
    for m in list(app.machines.values()):
        if m.state == "destroyed":
            ctx.store.forget_machine(m)
    del ctx.store.apps[app.name]
    # Machines still being destroyed finish on their own; keep them findable by id meanwhile.
    return Response(status_code=202)


# -- volumes ------------------------------------------------------------------------------------


def _volume(ctx: Context) -> VolumeRecord:
    app = ctx.store.app(ctx.params["app_name"])
    vol = app.volumes.get(ctx.params["volume_id"])
    if vol is None:
        raise APIError(404, "volume not found")
    return vol


async def list_volumes(ctx: Context) -> Response:
    app = ctx.store.app(ctx.params["app_name"])
    return json_response([v.to_wire() for v in app.volumes.values() if v.state != "destroyed"])


async def create_volume(ctx: Context) -> Response:
    app = ctx.store.app(ctx.params["app_name"])
    body = await ctx.body("CreateVolumeRequest")
    name = body.get("name")
    if not name:
        raise bad_request("name: required (the volume name)")
    size = body.get("size_gb", 3)
    if size < 1 or size > 500:
        raise bad_request("size_gb: must be between 1 and 500")
    retention = body.get("snapshot_retention", 5)
    if not 1 <= retention <= 60:
        raise bad_request("snapshot_retention: must be between 1 and 60 days")
    fstype = body.get("fstype") or "ext4"
    if fstype not in ("ext4", "raw"):
        raise bad_request("fstype: use 'ext4' or 'raw'")
    source = body.get("source_volume_id")
    if source and source not in app.volumes:
        raise bad_request(f"source_volume_id: volume {source!r} not found")
    if ctx.fault.outcome == "capacity":
        ctx.store.faults_injected["capacity"] += 1
        raise APIError(412, "insufficient resources to create volume", "volume_placement_capacity")
    vol = VolumeRecord(
        id=ids.volume_id(),
        app=app.name,
        name=name,
        region=body.get("region") or ctx.config.region,
        size_gb=size,
        encrypted=body.get("encrypted", True),
        fstype=fstype,
        snapshot_retention=retention,
        auto_backup_enabled=body.get("auto_backup_enabled", True),
        created_at=wall(),
    )
    app.volumes[vol.id] = vol
    return json_response(vol.to_wire())


async def show_volume(ctx: Context) -> Response:
    return json_response(_volume(ctx).to_wire())


async def update_volume(ctx: Context) -> Response:
    vol = _volume(ctx)
    body = await ctx.body("UpdateVolumeRequest")
    if "snapshot_retention" in body:
        if not 1 <= body["snapshot_retention"] <= 60:
            raise bad_request("snapshot_retention: must be between 1 and 60 days")
        vol.snapshot_retention = body["snapshot_retention"]
    if "auto_backup_enabled" in body:
        vol.auto_backup_enabled = body["auto_backup_enabled"]
    return json_response(vol.to_wire())


async def delete_volume(ctx: Context) -> Response:
    vol = _volume(ctx)
    if vol.state == "destroyed":
        raise APIError(404, "volume not found")
    if vol.attached_machine_id:
        raise APIError(
            412,
            f"volume is attached to machine {vol.attached_machine_id}; destroy the machine first",
        )
    vol.state = "destroyed"
    return json_response(vol.to_wire())


async def extend_volume(ctx: Context) -> Response:
    vol = _volume(ctx)
    body = await ctx.body("ExtendVolumeRequest")
    size = body.get("size_gb")
    if not isinstance(size, int) or size <= vol.size_gb:
        raise bad_request(f"size_gb: must be larger than the current size ({vol.size_gb})")
    if size > 500:
        raise bad_request("size_gb: at most 500")
    vol.size_gb = size
    return json_response({"volume": vol.to_wire(), "needs_restart": False})


async def list_snapshots(ctx: Context) -> Response:
    return json_response(_volume(ctx).snapshots)


async def create_snapshot(ctx: Context) -> Response:
    vol = _volume(ctx)
    now = wall()
    vol.snapshots.insert(
        0,
        {
            "id": "vs_" + ids.ulid(now)[-16:].lower(),
            "size": 0,
            "volume_size": vol.size_gb * 1024**3,
            "digest": ids.image_ref(vol.id + str(now))["digest"],
            "created_at": ids.rfc3339(now),
            "status": "created",
            "retention_days": vol.snapshot_retention,
        },
    )
    return Response(status_code=200)


async def regions(ctx: Context) -> Response:
    return json_response({"regions": REGIONS, "nearest": ctx.config.region})


HANDLERS: dict[str, Handler] = {
    "Apps_list": list_apps,
    "Apps_create": create_app,
    "Apps_show": show_app,
    "Apps_delete": delete_app,
    "Volumes_list": list_volumes,
    "Volumes_create": create_volume,
    "Volumes_get_by_id": show_volume,
    "Volumes_update": update_volume,
    "Volume_delete": delete_volume,
    "Volumes_extend": extend_volume,
    "Volumes_list_snapshots": list_snapshots,
    "createVolumeSnapshot": create_snapshot,
    "Platform_regions_get": regions,
}
