"""The planner's views of one app's listing, read straight from Fly's JSON and kept between ticks.

A tick at thousands of machines used to spend most of its time validating every listed machine
into the full :class:`~scaler.fly.models.Machine` model (config, services, checks, events) only to
read a dozen fields from it. :class:`ViewCache` reads those fields from the JSON objects of
:meth:`~scaler.fly.client.AsyncFlyClient.list_machines_raw` and reuses the previous listing's
view of a machine whose state, instance, update time and metadata are unchanged, so a steady
fleet costs a dictionary lookup per machine. The views are the ones
:func:`~scaler.loop.machines.machine_view` builds from the full model (a test holds the two
equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from scaler.config import PoolSpec
from scaler.loop.machines import (
    META_JOB,
    META_LAUNCH,
    META_MESSAGE,
    META_POOL,
    META_QUEUE,
    META_SCALER,
    META_SIZE,
    META_SLOT,
    epoch,
    pool_of,
)
from scaler.policy.types import MachineView

__all__ = ["ViewCache", "listed_view"]

# What makes a cached view stale: any change of these top-level fields or of the metadata.
_Key = tuple[Any, Any, Any, Any, Any]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _started_at(raw: Mapping[str, Any], state: str) -> float | None:
    events = raw.get("events")
    if isinstance(events, list):
        for event in events:
            if (isinstance(event, dict) and event.get("status") == "started"
                    and isinstance(ts := event.get("timestamp"), int | float) and ts):
                return float(ts) / 1000.0
    if state == "started":
        return epoch(raw.get("updated_at")) or None
    return None


def _config(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    config = raw.get("config")
    return config if isinstance(config, dict) else {}


def _metadata(config: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = config.get("metadata")
    return meta if isinstance(meta, dict) else {}


def listed_view(
    raw: Mapping[str, Any], app: str, scaler_id: str, pools: Mapping[str, PoolSpec]
) -> MachineView | None:
    """The planner's view of one machine as Fly listed it (a JSON object), or ``None`` when it is
    not ours: the same view :func:`~scaler.loop.machines.machine_view` gives for the model."""
    config = _config(raw)
    meta = _metadata(config)
    machine_id = _text(raw.get("id"))
    if meta.get(META_SCALER) != scaler_id or not machine_id:
        return None
    pool = _text(meta.get(META_POOL))
    launch = _text(meta.get(META_LAUNCH))
    state = _text(raw.get("state")) or "unknown"
    guest = config.get("guest")
    memory = guest.get("memory_mb") if isinstance(guest, dict) else None
    return MachineView(
        id=machine_id,
        name=_text(raw.get("name")) or "",
        app=app,
        pool=pool_of(pool, app, pools),
        state=state,
        region=_text(raw.get("region")) or "",
        created_at=epoch(raw.get("created_at")),
        updated_at=epoch(raw.get("updated_at")),
        started_at=_started_at(raw, state),
        job=_text(meta.get(META_JOB)),
        queue=_text(meta.get(META_QUEUE)),
        message_id=_text(meta.get(META_MESSAGE)),
        launch=int(launch) if launch and launch.isdigit() else None,
        size=_text(meta.get(META_SIZE)) or "",
        memory_mb=memory if isinstance(memory, int) else 0,
        slot=_text(meta.get(META_SLOT)),
        instance_id=_text(raw.get("instance_id")),
    )


def _shifted(v: MachineView, offset: float) -> MachineView:
    return replace(
        v,
        created_at=v.created_at - offset if v.created_at else v.created_at,
        updated_at=v.updated_at - offset if v.updated_at else v.updated_at,
        started_at=None if v.started_at is None else v.started_at - offset,
    )


class ViewCache:
    """One app's views by machine id, rebuilt from each listing, reusing unchanged machines' views.

    A machine's view is rebuilt when its ``state``, ``instance_id`` (new on every config update),
    ``updated_at`` (every state change), ``name`` or ``region`` or its metadata differ from the
    listing the view was built from. Machines gone from the listing leave the cache with it.
    """

    def __init__(self, app: str, scaler_id: str, pools: Mapping[str, PoolSpec]) -> None:
        self.app = app
        self.scaler_id = scaler_id
        self.pools = pools
        self._views: dict[str, tuple[_Key, Mapping[str, Any], MachineView | None]] = {}
        self._offset = 0.0
        self.reused = 0  # views taken from the previous listing by the last update

    def update(self, machines: list[dict[str, Any]], offset: float = 0.0) -> list[MachineView]:
        """The views of ``machines`` (one listing, as Fly sent it), ours only, in listing order,
        with Fly's timestamps moved by ``-offset`` (Fly's clock minus ours) onto our clock."""
        previous, views, out = self._views, {}, []
        if offset != self._offset:  # a new clock estimate: every view's times move
            previous, self._offset = {}, offset
        reused = 0
        for raw in machines:
            machine_id = raw.get("id")
            if not isinstance(machine_id, str):
                continue
            meta = _metadata(_config(raw))
            key = (raw.get("state"), raw.get("instance_id"), raw.get("updated_at"),
                   raw.get("name"), raw.get("region"))
            hit = previous.get(machine_id)
            if hit is not None and hit[0] == key and hit[1] == meta:
                view = hit[2]
                reused += 1
            else:
                view = listed_view(raw, self.app, self.scaler_id, self.pools)
                if view is not None and offset:
                    view = _shifted(view, offset)
            views[machine_id] = (key, meta, view)
            if view is not None:
                out.append(view)
        self._views = views
        self.reused = reused
        return out
