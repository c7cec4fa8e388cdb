"""Handlers of the machine operations (keyed by the spec's operationId)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response

from scaler.local import ids
from scaler.local.clock import wall
from scaler.local.context import NONCE_HEADER, Context, DropConnection, Handler, json_response
from scaler.local.errors import APIError, LeaseError, bad_request
from scaler.local.model import Lease, MachineRecord
from scaler.local.validation import (
    check_body,
    check_machine_config,
    query_bool,
    require_int,
)

__all__ = ["HANDLERS"]

OK: dict[str, Any] = {"ok": True}
WAIT_STATES = frozenset({"started", "stopped", "suspended", "destroyed", "failed", "settled"})
LIST_STATES = frozenset(
    {"created", "starting", "started", "stopping", "stopped", "suspending", "suspended",
     "replacing", "destroying", "destroyed", "failed", "restarting"}
)
DEFAULT_LEASE_TTL = 30


def _wire(ctx: Context, m: MachineRecord) -> dict[str, Any]:
    return m.to_wire(include_lease=query_bool(ctx.query.get("include_leases")))


async def list_machines(ctx: Context) -> Response:
    app = ctx.store.app(ctx.params["app_name"])
    q = ctx.query
    include_deleted = query_bool(q.get("include_deleted"))
    region = q.get("region") or None
    states: set[str] | None = None
    if q.get("state"):
        states = {s.strip() for v in q.getlist("state") for s in v.split(",") if s.strip()}
        unknown = states - LIST_STATES
        if unknown:
            raise bad_request(f"state: unknown state(s) {sorted(unknown)}")
    filters = [(k[9:], v) for k, v in q.multi_items() if k.startswith("metadata.") and k[9:]]
    selected = []
    for m in app.machines.values():
        if m.state == "destroyed" and not include_deleted:
            continue
        if region is not None and m.region != region:
            continue
        if states is not None and m.state not in states:
            continue
        if filters:
            md = m.config.get("metadata") or {}
            if any(md.get(k) != v for k, v in filters):
                continue
        selected.append(m)
    if query_bool(q.get("summary")):
        body = b"[" + b",".join(m.summary_json() for m in selected) + b"]"
        return Response(body, media_type="application/json")
    if query_bool(q.get("include_leases")):  # a lease expires by itself: not cached
        return json_response([_wire(ctx, m) for m in selected])
    body = b"[" + b",".join(m.wire_json() for m in selected) + b"]"
    return Response(body, media_type="application/json")


def _check_mounts(ctx: Context, config: dict[str, Any], machine_id: str | None) -> None:
    app = ctx.store.app(ctx.params["app_name"])
    for i, mount in enumerate(config.get("mounts") or []):
        vol = app.volumes.get(str(mount["volume"]))
        if vol is None or vol.state == "destroyed":
            raise bad_request(f"config.mounts.{i}.volume: volume not found: {mount['volume']!r}")
        if vol.attached_machine_id and vol.attached_machine_id != machine_id:
            raise APIError(
                412, f"volume {vol.id} is already attached to machine {vol.attached_machine_id}"
            )


def _attach(ctx: Context, m: MachineRecord) -> None:
    app = ctx.store.app(m.app)
    for mount in m.config.get("mounts") or []:
        vol = app.volumes[str(mount["volume"])]
        vol.attached_machine_id = m.id
        mount.setdefault("path", "/data")
        mount.setdefault("name", vol.name)
        m.region = vol.region
        m.changed()


async def create_machine(ctx: Context) -> Response:
    app = ctx.store.app(ctx.params["app_name"])
    body = await ctx.body("CreateMachineRequest")
    config = check_machine_config(body.get("config"))
    name = body.get("name") or ""
    if name:
        if any(m.name == name and m.state != "destroyed" for m in app.machines.values()):
            raise APIError(
                409, f"name: a machine named {name!r} already exists in this app", "name_taken"
            )
    else:
        name = ids.machine_name()
    lease_ttl = body.get("lease_ttl")
    if lease_ttl is not None and lease_ttl <= 0:
        raise bad_request("lease_ttl: must be a positive number of seconds")
    _check_mounts(ctx, config, None)
    if ctx.fault.outcome == "capacity":
        raise _capacity_error(ctx)
    m = ctx.engine.create(
        app.name,
        name,
        body.get("region") or ctx.config.region,
        config,
        skip_launch=bool(body.get("skip_launch")),
        lease_ttl=lease_ttl,
        owner=ctx.owner,
        cordoned=bool(body.get("skip_service_registration")),
    )
    _attach(ctx, m)
    ctx.request.state.created_machine = m.id  # for the create log
    if ctx.fault.outcome == "ambiguous":
        ctx.store.faults_injected["ambiguous_create"] += 1
        if ctx.fault.ambiguous_mode == "drop":
            raise DropConnection()
        if ctx.fault.ambiguous_mode == "5xx":
            raise APIError(ctx.fault.error_status, "internal: injected fault after commit",
                           "unknown")
        raise APIError(408, "deadline_exceeded: request timed out waiting for the machine")
    out = m.to_wire()
    if m.nonce:
        out["nonce"] = m.nonce
    return json_response(out)


def _capacity_error(ctx: Context) -> APIError:
    ctx.store.faults_injected["capacity"] += 1
    return APIError(
        412,
        "insufficient resources available to fulfill request: could not reserve resource for "
        "machine",
        "insufficient_capacity",
    )


async def show_machine(ctx: Context) -> Response:
    return json_response(_wire(ctx, ctx.machine()))


async def update_machine(ctx: Context) -> Response:
    m = ctx.machine()
    body = await ctx.body("UpdateMachineRequest")
    ctx.require_nonce(m)
    if m.state == "destroyed":
        raise APIError(412, "unable to update a destroyed machine")
    current = body.get("current_version")
    if current and current != m.instance_id:
        raise APIError(
            409,
            f"current_version: {current!r} is not the current version {m.instance_id!r}; "
            "get the machine and retry",
        )
    if body.get("name") and body["name"] != m.name:
        raise bad_request(f"name: cannot be changed on update (is {m.name!r})")
    if body.get("region") and body["region"] != m.region:
        raise bad_request(f"region: cannot be changed on update (is {m.region!r})")
    config = check_machine_config(body.get("config"))
    _check_mounts(ctx, config, m.id)
    if ctx.fault.outcome == "capacity":
        raise APIError(409, "insufficient resources to update machine", "insufficient_capacity")
    ctx.engine.update(m, config, skip_launch=bool(body.get("skip_launch")))
    _attach(ctx, m)
    return json_response(_wire(ctx, m))


async def start_machine(ctx: Context) -> Response:
    m = ctx.machine()
    ctx.require_nonce(m)
    if ctx.fault.outcome == "capacity":
        raise _capacity_error(ctx)
    previous = ctx.engine.start(m)
    return json_response({"previous_state": previous, "migrated": False, "new_host": ""})


async def stop_machine(ctx: Context) -> Response:
    m = ctx.machine()
    body = await ctx.body("StopRequest", optional=True)
    ctx.require_nonce(m)
    ctx.engine.stop(m, body.get("signal"), body.get("timeout"))
    return json_response(OK)


async def restart_machine(ctx: Context) -> Response:
    m = ctx.machine()
    ctx.require_nonce(m)
    ctx.engine.restart(m, ctx.query.get("signal"), ctx.query.get("timeout"))
    return json_response(OK)


async def suspend_machine(ctx: Context) -> Response:
    m = ctx.machine()
    ctx.require_nonce(m)
    ctx.engine.suspend(m)
    return json_response(OK)


async def signal_machine(ctx: Context) -> Response:
    m = ctx.machine()
    body = await ctx.body(optional=True)
    if body.get("signal") is None:
        raise bad_request("signal: required, e.g. {\"signal\": \"SIGTERM\"}")
    if not isinstance(body["signal"], int):  # fly-go's Kill sends a number: not in the schema
        check_body(body, "SignalRequest")
    ctx.require_nonce(m)
    ctx.engine.signal(m, body["signal"])
    return json_response(OK)


async def delete_machine(ctx: Context) -> Response:
    m = ctx.machine()
    ctx.require_nonce(m)
    force = query_bool(ctx.query.get("force")) or query_bool(ctx.query.get("kill"))
    ctx.engine.destroy(m, force)
    return json_response(OK)


async def cordon(ctx: Context) -> Response:
    m = ctx.machine()
    ctx.require_nonce(m)
    ctx.engine.cordon(m, ctx.operation == "Machines_cordon")
    return json_response(OK)


async def wait_machine(ctx: Context) -> Response:
    m = ctx.machine()
    q = ctx.query
    states = [s.strip() for v in q.getlist("state") for s in v.split(",") if s.strip()]
    states = states or ["started"]
    unknown = set(states) - WAIT_STATES
    if unknown:
        raise bad_request(
            f"state: unknown {sorted(unknown)}; use started, stopped, suspended, destroyed, "
            "failed or settled"
        )
    timeout = require_int(q.get("timeout"), "timeout", 60, 1, 60)
    version = q.get("version") or q.get("instance_id")
    if states == ["stopped"] and not version:
        raise bad_request("instance_id: required when waiting for state 'stopped' (or version)")
    if version and version != m.instance_id and version not in {v for v, _ in m.versions}:
        raise bad_request(f"version: {version!r} is not a version of this machine")
    if not await ctx.engine.wait(m, states, float(timeout), version):
        raise APIError(
            408, f"deadline_exceeded: machine did not reach state {'|'.join(states)} in time"
        )
    event_id = m.events[0]["id"] if m.events else ""
    return json_response(
        {"ok": True, "state": m.state, "version": m.instance_id, "event_id": event_id}
    )


async def list_events(ctx: Context) -> Response:
    m = ctx.machine()
    limit = require_int(ctx.query.get("limit"), "limit", 20, 1, 50)
    return json_response(m.events[:limit])


async def list_versions(ctx: Context) -> Response:
    m = ctx.machine()
    return json_response([{"version": v, "user_config": c} for v, c in m.versions])


# -- metadata ---------------------------------------------------------------------------------


async def show_metadata(ctx: Context) -> Response:
    return json_response(ctx.machine().metadata)


async def update_metadata(ctx: Context) -> Response:
    m = ctx.machine()
    body = await ctx.body()
    changes = body.get("metadata")
    # A null value removes a key (what clients send); the schema only allows strings.
    if isinstance(changes, dict):
        check_body(
            {**body, "metadata": {k: "" if v is None else v for k, v in changes.items()}},
            "updateMetadataRequest",
        )
    else:
        check_body(body, "updateMetadataRequest")
    ctx.require_nonce(m)
    version = body.get("machine_version")
    if version and version != m.instance_id:
        raise APIError(412, f"machine_version: {version!r} is not the current version")
    md = m.metadata
    changes = changes or {}
    for key, value in changes.items():
        if value is None or value == "":
            md.pop(key, None)
        elif not isinstance(value, str):
            raise bad_request(f"metadata.{key}: values must be strings")
        else:
            md[key] = value
    m.touch()
    return Response(status_code=204)


async def get_metadata_key(ctx: Context) -> Response:
    md = ctx.machine().metadata
    key = ctx.params["key"]
    if key not in md:
        raise APIError(404, f"metadata key {key!r} not found")
    return json_response({"value": md[key]})


async def upsert_metadata(ctx: Context) -> Response:
    m = ctx.machine()
    body = await ctx.body("upsertMetadataKeyRequest")
    ctx.require_nonce(m)
    value = body.get("value")
    if not isinstance(value, str):
        raise bad_request("value: required string")
    m.metadata[ctx.params["key"]] = value
    m.touch()
    return Response(status_code=204)


async def delete_metadata(ctx: Context) -> Response:
    m = ctx.machine()
    ctx.require_nonce(m)
    m.metadata.pop(ctx.params["key"], None)
    m.touch()
    return Response(status_code=204)


# -- leases (Fly's envelope, not the spec's flat Lease) ----------------------------------------


def _envelope(lease: Lease) -> dict[str, Any]:
    return {"status": "success", "data": lease.envelope_data()}


async def show_lease(ctx: Context) -> Response:
    lease = ctx.machine().live_lease(wall())
    if lease is None:
        raise LeaseError(404, "lease not found")
    return json_response(_envelope(lease))


async def create_lease(ctx: Context) -> Response:
    m = ctx.machine()
    body = await ctx.body("CreateLeaseRequest", optional=True)
    ttl: Any = body.get("ttl") or ctx.query.get("ttl") or DEFAULT_LEASE_TTL
    try:
        ttl = int(ttl)
    except (TypeError, ValueError):
        raise LeaseError(400, f"ttl: expected seconds as an integer, got {ttl!r}") from None
    if ttl <= 0:
        raise LeaseError(400, "ttl: must be a positive number of seconds")
    if m.state == "destroyed":
        raise LeaseError(412, "machine is destroyed")
    now = wall()
    nonce = ctx.request.headers.get(NONCE_HEADER, "")
    lease = m.live_lease(now)
    if lease is not None:
        if nonce != lease.nonce:
            raise LeaseError(
                409,
                f"machine ID {m.id} lease currently held by {lease.owner}, expires at "
                f"{int(lease.expires_at)}",
            )
        lease.expires_at = now + ttl
    else:
        lease = m.lease = Lease(
            ids.lease_nonce(), ctx.owner, str(body.get("description") or ""), now + ttl,
            m.instance_id,
        )
    m.touch()
    return json_response(_envelope(lease), 201)


async def release_lease(ctx: Context) -> Response:
    m = ctx.machine()
    lease = m.live_lease(wall())
    if lease is None:
        raise LeaseError(404, "lease not found")
    if ctx.request.headers.get(NONCE_HEADER, "") != lease.nonce:
        raise LeaseError(
            409, f"machine ID {m.id} lease currently held by {lease.owner}; nonce does not match"
        )
    m.lease = None
    m.touch()
    return json_response({"status": "success", "data": {"ok": True}})


async def exit_machine(ctx: Context) -> Response:
    """Admin: make a machine's main process exit with a code."""
    m = ctx.machine()
    body = await ctx.body(optional=True)
    code = body.get("exit_code", 0)
    if not isinstance(code, int) or isinstance(code, bool):
        raise bad_request("exit_code: expected an integer")
    ctx.engine.inject_exit(m, code)
    await asyncio.sleep(0)
    return json_response(OK)


HANDLERS: dict[str, Handler] = {
    "Machines_list": list_machines,
    "Machines_create": create_machine,
    "Machines_show": show_machine,
    "Machines_update": update_machine,
    "Machines_delete": delete_machine,
    "Machines_start": start_machine,
    "Machines_stop": stop_machine,
    "Machines_restart": restart_machine,
    "Machines_suspend": suspend_machine,
    "Machines_signal": signal_machine,
    "Machines_cordon": cordon,
    "Machines_uncordon": cordon,
    "Machines_wait": wait_machine,
    "Machines_list_events": list_events,
    "Machines_list_versions": list_versions,
    "Machines_show_metadata": show_metadata,
    "Machines_update_metadata": update_metadata,
    "Machines_get_metadata_key": get_metadata_key,
    "Machines_upsert_metadata": upsert_metadata,
    "Machines_delete_metadata": delete_metadata,
    "Machines_show_lease": show_lease,
    "Machines_create_lease": create_lease,
    "Machines_release_lease": release_lease,
}
