"""The planner's views of one app's listing, read from the slim listing and kept between ticks.

A tick at thousands of machines used to spend most of its time decoding every listed machine's
full JSON (config, env, services, image, checks, events) only to read a dozen fields from it.
:class:`ViewCache` takes the listing as :meth:`~scaler.fly.client.AsyncFlyClient.list_machines_slim`
gives it (each machine's JSON object as Fly sent it, undecoded) and reuses the previous listing's
view of every machine whose bytes are unchanged; only a new or changed machine is decoded, into
the slim :class:`~scaler.fly.models.slim.ListedMachine` (msgspec skips the fields the planner does
not read). A steady fleet costs a dictionary lookup per machine. The views are the ones
:func:`~scaler.loop.machines.machine_view` builds from the full model (a test holds the two
equal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

import msgspec

from scaler.config import PoolSpec
from scaler.fly.models.slim import ListedMachine, decode_listed
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

_MISS = object()


def _started_at(machine: ListedMachine, state: str) -> float | None:
    for event in machine.events or ():
        if event.status == "started" and event.timestamp:
            return float(event.timestamp) / 1000.0
    if state == "started":
        return epoch(machine.updated_at) or None
    return None


def listed_view(
    machine: ListedMachine, app: str, scaler_id: str, pools: Mapping[str, PoolSpec]
) -> MachineView | None:
    """The planner's view of one machine as Fly listed it, or ``None`` when it is not ours: the
    same view :func:`~scaler.loop.machines.machine_view` gives for the full model."""
    meta = machine.metadata
    if meta.get(META_SCALER) != scaler_id or not machine.id:
        return None
    launch = meta.get(META_LAUNCH)
    state = machine.state or "unknown"
    guest = machine.config.guest if machine.config is not None else None
    return MachineView(
        id=machine.id,
        name=machine.name or "",
        app=app,
        pool=pool_of(meta.get(META_POOL), app, pools),
        state=state,
        region=machine.region or "",
        created_at=epoch(machine.created_at),
        updated_at=epoch(machine.updated_at),
        started_at=_started_at(machine, state),
        job=meta.get(META_JOB),
        queue=meta.get(META_QUEUE),
        message_id=meta.get(META_MESSAGE),
        launch=int(launch) if launch and launch.isdigit() else None,
        size=meta.get(META_SIZE) or "",
        memory_mb=(guest.memory_mb or 0) if guest is not None else 0,
        slot=meta.get(META_SLOT),
        instance_id=machine.instance_id,
    )


def _shifted(v: MachineView, offset: float) -> MachineView:
    return replace(
        v,
        created_at=v.created_at - offset if v.created_at else v.created_at,
        updated_at=v.updated_at - offset if v.updated_at else v.updated_at,
        started_at=None if v.started_at is None else v.started_at - offset,
    )


class ViewCache:
    """One app's views, rebuilt from each listing, reusing the views of unchanged machines.

    A machine is unchanged when its JSON object is byte for byte the one the cached view was
    built from (any change on Fly's side, a state, an event, the metadata, shows in its bytes;
    bytes that differ for no reason only cost a decode). Machines gone from the listing leave the
    cache with it. Not ours is cached too (``None``), so foreign machines cost a lookup as well.
    """

    def __init__(self, app: str, scaler_id: str, pools: Mapping[str, PoolSpec]) -> None:
        self.app = app
        self.scaler_id = scaler_id
        self.pools = pools
        self._views: dict[bytes, MachineView | None] = {}
        self._offset = 0.0
        self.reused = 0  # views taken from the previous listing by the last update

    def update(
        self, machines: Iterable[msgspec.Raw | bytes], offset: float = 0.0
    ) -> list[MachineView]:
        """The views of ``machines`` (one listing: each machine's JSON object as Fly sent it,
        e.g. :attr:`~scaler.fly.models.slim.SlimListing.items`), ours only, in listing order,
        with Fly's timestamps moved by ``-offset`` (Fly's clock minus ours) onto our clock.

        Raises:
            msgspec.ValidationError: a changed machine is not an object, or a field has the
                wrong type (the listing cannot be read; nothing of it is kept).
        """
        # A new clock estimate moves every view's times: nothing is reused.
        previous = self._views if offset == self._offset else {}
        views: dict[bytes, MachineView | None] = {}
        out: list[MachineView] = []
        reused = 0
        for item in machines:
            raw = bytes(item)
            cached = previous.get(raw, _MISS)
            if cached is not _MISS:
                view = cached if isinstance(cached, MachineView) else None
                reused += 1
            else:
                view = listed_view(decode_listed(raw), self.app, self.scaler_id, self.pools)
                if view is not None and offset:
                    view = _shifted(view, offset)
            views[raw] = view
            if view is not None:
                out.append(view)
        self._views, self._offset, self.reused = views, offset, reused
        return out
