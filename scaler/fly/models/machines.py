"""Machines as Fly answers them: state, events, image, leases, wait and start answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from scaler.fly.models.base import FlyModel
from scaler.fly.models.config import FlyMachineConfig

__all__ = [
    "CheckStatus",
    "ExitEvent",
    "ImageRef",
    "Lease",
    "Machine",
    "MachineEvent",
    "MachineEventRequest",
    "MachineVersion",
    "OkResponse",
    "StartResponse",
    "StrippedLease",
    "WaitResponse",
    "parse_lease",
]


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
