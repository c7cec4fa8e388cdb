"""What the act step has done that Fly's listings may not show yet, owned by the loop and shared
explicitly by observe and act.

- :class:`InFlight`: every machine a create call may be making. A Launch reserves its machines
  before it claims the messages (a reservation is named after its claim once the claim is made); a
  worker Create reserves named machines. An entry counts against the caps until its create has
  returned *and* a listing shows the machine, or the create is known to have made nothing. A
  returned machine that a listing taken ``consistency_grace`` seconds after the return still lacks
  is taken to be gone already (it finished and destroyed itself). Entries named after a per-job
  claim are not counted here: the claim itself holds the slot (see ``scaler.policy.caps``); they
  only tell the planner that the claim's create is still under way, and count again once the
  claim has ended (a short job) while no listing shows the machine yet.
- :class:`Overlay`: starts and destroys sent since the listing was taken, laid over a reused
  listing so that a started machine counts and a destroyed one does not; and the exits Fly
  confirmed (:mod:`scaler.loop.exits`), so a machine whose job finished stops counting once Fly
  says it stopped, not once a listing shows it.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaler.loop.exits import Exit

__all__ = ["InFlight", "Overlay", "PendingCreate"]


@dataclass(slots=True)
class PendingCreate:
    """One machine a create call may be making."""

    pool: str
    app: str
    name: str | None  # None: a Launch's reservation whose claim is not made yet
    sent_at: float
    returned_at: float | None = None
    machine_id: str | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """What one app's listing shows, for matching pending creates against it."""

    taken_at: float
    names: Collection[str]
    ids: Collection[str]


class InFlight:
    """The act step's pending creates (see the module docstring)."""

    def __init__(self, consistency_grace: float = 2.0) -> None:
        self.consistency_grace = consistency_grace
        self._items: dict[int, PendingCreate] = {}
        self._keys = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def reserve(self, pool: str, app: str, now: float, names: list[str | None]) -> list[int]:
        """Reserve one entry per name (``None``: not named yet); returns their keys."""
        keys = []
        for name in names:
            key = next(self._keys)
            self._items[key] = PendingCreate(pool, app, name, now)
            keys.append(key)
        return keys

    def name(self, key: int, name: str) -> None:
        """A reservation's claim is made: it is that claim's machine now."""
        item = self._items.get(key)
        if item is not None:
            item.name = name

    def returned(self, key: int, machine_id: str | None, now: float) -> None:
        """The create returned this machine (``None``: it was abandoned, its outcome unknown); it
        counts until a listing shows it, or a listing taken long enough after lacks it."""
        item = self._items.get(key)
        if item is not None:
            item.returned_at = now
            item.machine_id = machine_id

    def drop(self, *keys: int) -> None:
        """The create made no machine (refused, failed for sure, or never sent)."""
        for key in keys:
            self._items.pop(key, None)

    def unreturned(self) -> set[str]:
        """Names of machines whose create has not returned: their claims must not be relaunched."""
        return {
            i.name for i in self._items.values() if i.name is not None and i.returned_at is None
        }

    def count(
        self, listings: Mapping[str, Listed | None], claim_names: Collection[str]
    ) -> dict[str, int]:
        """Per pool, pending machines no listing shows yet; forgets the entries that are settled.

        ``listings``: per app, what its listing shows (``None``: unknown, nothing is forgotten).
        ``claim_names``: machine names of every claim read this tick (those claims hold the slot).
        """
        out: dict[str, int] = {}
        for key, item in list(self._items.items()):
            listed = listings.get(item.app)
            if listed is None:
                continue
            visible = (item.name is not None and item.name in listed.names) or (
                item.machine_id is not None and item.machine_id in listed.ids
            )
            if item.returned_at is not None and (
                visible or listed.taken_at >= item.returned_at + self.consistency_grace
            ):
                del self._items[key]  # a listing shows it now (or, long after, shows it gone)
                continue
            if visible or (item.name is not None and item.name in claim_names):
                continue  # the listing counts it, or its claim does while the claim lasts
            # Kept until a listing shows it, not only until its claim binds it: a short job ends
            # its claim before a (reused, older) listing shows the machine, which is still live.
            out[item.pool] = out.get(item.pool, 0) + 1
        return out


@dataclass
class Overlay:
    """Starts and destroys the act step sent, keyed by machine id, with the time they were sent."""

    started: dict[str, float] = field(default_factory=dict)
    destroyed: dict[str, float] = field(default_factory=dict)
    exited: dict[str, Exit] = field(default_factory=dict)

    def exit_state(self, machine_id: str, taken_at: float) -> str | None:
        """The state Fly confirmed the machine exited to, for a listing taken at ``taken_at``:
        only if Fly answered after that listing was taken, and no start was sent since the wait
        was (a warm slot started again is running, whatever an earlier stop said)."""
        x = self.exited.get(machine_id)
        if x is None or x.answered_at < taken_at:
            return None
        if self.started.get(machine_id, float("-inf")) >= x.sent_at:
            return None
        return x.state

    def prune(self, before: float) -> None:
        """Forget changes older than ``before`` (every listing taken since reflects them)."""
        self.started = {k: v for k, v in self.started.items() if v >= before}
        self.destroyed = {k: v for k, v in self.destroyed.items() if v >= before}
        self.exited = {k: v for k, v in self.exited.items() if v.answered_at >= before}
