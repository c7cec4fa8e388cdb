"""In-memory records of apps, machines, volumes and leases, and their wire shapes.

Records use ``__slots__`` and keep only what the API reports: the sim runtime holds 10,000+
machines in one process. A machine caches its list entry's JSON (full and ``summary``) until it
next changes, so a listing of unchanged machines is a join of cached bytes, not a serialization
of every machine's config (what made a 1,000-machine listing cost ~80 ms). Every change of a
machine goes through :meth:`MachineRecord.touch` (or :meth:`MachineRecord.changed`), which drops
both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from scaler.local import ids
from scaler.local.clock import wall

__all__ = [
    "AppRecord",
    "Lease",
    "MachineRecord",
    "VolumeRecord",
]

MAX_EVENTS = 50
_dumps = json.JSONEncoder(separators=(",", ":")).encode
# What the routes' JSON responses use (scaler.local.context.json_response): a listing joined from
# cached entries is byte for byte the listing encoded at once.
_dumps_wire = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(slots=True)
class Lease:
    """A machine lease (docs/fly-behaviour.md, "Leases"); ``expires_at`` is Unix seconds."""

    nonce: str
    owner: str
    description: str
    expires_at: float
    version: str

    def live(self, now: float) -> bool:
        """Whether it has not expired at wall time ``now``."""
        return self.expires_at > now

    def envelope_data(self) -> dict[str, Any]:
        """The ``data`` of Fly's lease envelope."""
        return {
            "nonce": self.nonce,
            "expires_at": int(self.expires_at),
            "owner": self.owner,
            "description": self.description,
            "version": self.version,
        }


class MachineRecord:
    """One machine: identity, state, config, events, versions, lease."""

    __slots__ = (
        "__weakref__",
        "_summary_json",
        "_wire_json",
        "app",
        "config",
        "cordoned",
        "created_at",
        "events",
        "id",
        "image_ref",
        "instance_id",
        "lease",
        "name",
        "nonce",
        "op",
        "private_ip",
        "region",
        "restarts",
        "run_token",
        "state",
        "updated_at",
        "versions",
    )

    def __init__(
        self, app: str, name: str, region: str, config: dict[str, Any], now: float
    ) -> None:
        self.id = ids.machine_id()
        self.app = app
        self.name = name
        self.region = region
        self.config = config
        self.state = "created"
        self.instance_id = ids.ulid(now)
        self.private_ip = ids.private_ip()
        self.image_ref = ids.image_ref(str(config.get("image", "")))
        self.created_at = now
        self.updated_at = now
        self.events: list[dict[str, Any]] = []  # newest first
        self.versions: list[tuple[str, dict[str, Any]]] = [(self.instance_id, config)]
        self.lease: Lease | None = None
        self.nonce: str | None = None
        self.cordoned = False
        self.restarts: list[float] = []  # monotonic times of policy restarts
        self.run_token = 0  # bumped whenever a main process is (re)started
        self.op = 0  # bumped by every lifecycle operation; a stale one stops at its next step
        self._summary_json: bytes | None = None
        self._wire_json: bytes | None = None

    # -- mutation helpers -------------------------------------------------------------------

    def touch(self, now: float | None = None) -> None:
        """Record a change (invalidates the cached list entries)."""
        self.updated_at = wall() if now is None else now
        self.changed()

    def changed(self) -> None:
        """Drop the cached list entries after a change that does not move ``updated_at``."""
        self._summary_json = None
        self._wire_json = None

    def add_event(
        self,
        type_: str,
        status: str,
        source: str,
        request: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Prepend an event in the fly-go shape and return it."""
        at = wall() if now is None else now
        event: dict[str, Any] = {
            "id": ids.ulid(at),
            "type": type_,
            "status": status,
            "source": source,
            "timestamp": ids.event_ms(at),
        }
        if request is not None:
            event["request"] = request
        self.events.insert(0, event)
        del self.events[MAX_EVENTS:]
        self.touch(at)
        return event

    @property
    def metadata(self) -> dict[str, str]:
        """``config.metadata`` (created empty on first access)."""
        md = self.config.get("metadata")
        if not isinstance(md, dict):
            md = self.config["metadata"] = {}
            self.changed()
        return md

    # -- wire shapes --------------------------------------------------------------------------

    def to_wire(self, *, include_lease: bool = False, now: float | None = None) -> dict[str, Any]:
        """The full ``Machine`` body."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "region": self.region,
            "instance_id": self.instance_id,
            "private_ip": self.private_ip,
            "config": self.config,
            "image_ref": self.image_ref,
            "created_at": ids.rfc3339(self.created_at),
            "updated_at": ids.rfc3339(self.updated_at),
            "events": self.events,
            "checks": [],
            "host_status": "ok",
            "cordoned": self.cordoned,
        }
        if include_lease:
            lease = self.live_lease(wall() if now is None else now)
            if lease is not None:
                out["lease"] = {
                    "owner": lease.owner,
                    "description": lease.description,
                    "expires_at": int(lease.expires_at),
                }
        return out

    def wire_json(self) -> bytes:
        """The full list entry (:meth:`to_wire` without the lease), serialized as the routes
        serialize it (cached until the machine changes)."""
        cached = self._wire_json
        if cached is None:
            cached = self._wire_json = _dumps_wire(self.to_wire()).encode()
        return cached

    def summary_json(self) -> bytes:
        """The ``summary=true`` list entry, serialized (cached until the machine changes).

        Summary omits config except ``metadata`` and ``image``, events, checks and host status.
        """
        cached = self._summary_json
        if cached is None:
            cached = self._summary_json = _dumps(
                {
                    "id": self.id,
                    "name": self.name,
                    "state": self.state,
                    "region": self.region,
                    "instance_id": self.instance_id,
                    "private_ip": self.private_ip,
                    "config": {
                        "image": self.config.get("image", ""),
                        "metadata": self.config.get("metadata") or {},
                    },
                    "image_ref": self.image_ref,
                    "created_at": ids.rfc3339(self.created_at),
                    "updated_at": ids.rfc3339(self.updated_at),
                    "cordoned": self.cordoned,
                }
            ).encode()
        return cached

    def live_lease(self, now: float) -> Lease | None:
        """The lease if one is held and unexpired at wall time ``now``."""
        lease = self.lease
        if lease is not None and not lease.live(now):
            self.lease = lease = None
        return lease


@dataclass(slots=True)
class VolumeRecord:
    """One volume."""

    id: str
    app: str
    name: str
    region: str
    size_gb: int
    encrypted: bool
    fstype: str
    snapshot_retention: int
    auto_backup_enabled: bool
    created_at: float
    state: str = "created"
    attached_machine_id: str | None = None
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        """The ``Volume`` body."""
        blocks = self.size_gb * 1024 * 1024 // 4
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "size_gb": self.size_gb,
            "region": self.region,
            "zone": "a1b2",
            "encrypted": self.encrypted,
            "created_at": ids.rfc3339(self.created_at),
            "fstype": self.fstype,
            "block_size": 4096,
            "blocks": blocks,
            "blocks_free": blocks,
            "blocks_avail": blocks,
            "bytes_total": self.size_gb * 1024**3,
            "bytes_used": 0,
            "snapshot_retention": self.snapshot_retention,
            "auto_backup_enabled": self.auto_backup_enabled,
            "host_status": "ok",
            "type": "local",
        }
        if self.attached_machine_id:
            out["attached_machine_id"] = self.attached_machine_id
            out["attached_alloc_id"] = self.attached_machine_id
        return out


@dataclass(slots=True)
class AppRecord:
    """One app and its machines (indexed by id) and volumes."""

    id: str
    name: str
    org_slug: str
    network: str
    created_at: float
    machines: dict[str, MachineRecord] = field(default_factory=dict)
    volumes: dict[str, VolumeRecord] = field(default_factory=dict)
    destroyed: list[str] = field(default_factory=list)  # machine ids, oldest first

    def live_machines(self) -> list[MachineRecord]:
        """Machines that are not destroyed."""
        return [m for m in self.machines.values() if m.state != "destroyed"]

    def to_wire(self) -> dict[str, Any]:
        """The ``App`` body."""
        live = len(self.live_machines())
        return {
            "id": self.id,
            "name": self.name,
            "status": "deployed" if live else "pending",
            "organization": {"name": self.org_slug, "slug": self.org_slug},
            "network": self.network,
            "machine_count": live,
            "volume_count": sum(1 for v in self.volumes.values() if v.state != "destroyed"),
        }
