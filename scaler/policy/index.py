"""Indexes built once per plan, so every rule is a dictionary lookup (no quadratic scans)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scaler.policy.states import is_gone
from scaler.policy.types import ClaimView, MachineView, Observation, PoolPolicy

__all__ = ["AppIndex", "ClaimIndex", "claim_machine", "find_machine", "index_apps", "index_claims"]


@dataclass(slots=True)
class AppIndex:
    """One app's listed machines: by id, by name (a non-gone one preferred), by (job, launch),
    and per pool name (``None``: pool unknown), each list sorted by id."""

    by_id: dict[str, MachineView] = field(default_factory=dict)
    by_name: dict[str, MachineView] = field(default_factory=dict)
    by_job: dict[tuple[str, int | None], MachineView] = field(default_factory=dict)
    by_pool: dict[str | None, list[MachineView]] = field(default_factory=dict)


def _prefer(old: MachineView | None, new: MachineView) -> bool:
    return old is None or (is_gone(old.state) and not is_gone(new.state))


def index_apps(obs: Observation, pools: Sequence[PoolPolicy]) -> dict[str, AppIndex]:
    """Index every app whose listing is known; apps with an unknown listing are absent."""
    out: dict[str, AppIndex] = {}
    for app in sorted(obs.machines_by_app):
        machines = obs.machines_by_app[app]
        if machines is None:
            continue
        owners = {p.name for p in pools if app in p.fly_apps}  # pools with machines here
        idx = AppIndex()
        by_id, by_name, by_job, by_pool = idx.by_id, idx.by_name, idx.by_job, idx.by_pool
        for m in sorted(machines, key=_id):
            if m.id in by_id:
                continue
            by_id[m.id] = m
            old = by_name.get(m.name)
            if old is None or _prefer(old, m):
                by_name[m.name] = m
            if m.job is not None:
                key = (m.job, m.launch)
                old = by_job.get(key)
                if old is None or _prefer(old, m):
                    by_job[key] = m
            pool = m.pool if m.pool in owners else None
            group = by_pool.get(pool)
            if group is None:
                by_pool[pool] = [m]
            else:
                group.append(m)
        out[app] = idx
    return out


def _id(m: MachineView) -> str:
    return m.id


def find_machine(c: ClaimView, idx: AppIndex) -> MachineView | None:
    """The machine listed in ``idx`` for a claim: by id once its create returned, else by
    deterministic name, else by (job, launch) metadata."""
    if c.machine_id is not None:
        return idx.by_id.get(c.machine_id)
    m = idx.by_name.get(c.machine_name)
    if m is not None:
        return m
    return idx.by_job.get((c.job, c.launch))


def claim_machine(
    c: ClaimView, home_app: str | None, apps: Mapping[str, AppIndex], every_app_known: bool = True
) -> tuple[bool, MachineView | None]:
    """``(known, machine)`` of a claim: its machine lives in the app recorded in the claim, else
    in ``home_app`` (its pool's app); with neither, in any listed app (``every_app_known``: all
    listings were read). ``known`` is False when the listing that may hold the machine could not
    be read (then the machine is unknown, not absent)."""
    app = c.app or home_app
    if app is not None:
        idx = apps.get(app)
        return (False, None) if idx is None else (True, find_machine(c, idx))
    for idx in apps.values():
        m = find_machine(c, idx)
        if m is not None:
            return True, m
    return every_app_known, None


@dataclass(slots=True)
class ClaimIndex:
    """Claims of readable queues grouped by the per-job pool that owns them (deduplicated by job,
    oldest first), the claims no per-job pool owns any more, and the queues whose claims could not
    be read.

    A claim belongs to the pool named in it while that pool is a per-job pool; otherwise it is
    adopted by the first per-job pool serving its queue (a renamed pool, or the queue moved to
    another pool); with no such pool it is ``ownerless``: its job is finished on the machine it
    has, or given back to its queue, never dropped.
    """

    by_pool: dict[str, list[ClaimView]] = field(default_factory=dict)
    unknown_queues: frozenset[str] = frozenset()
    ownerless: list[ClaimView] = field(default_factory=list)

    def known(self, queue: str | None) -> bool:
        """Whether the claims of ``queue`` were read (``None``: of every queue)."""
        if queue is None:
            return not self.unknown_queues
        return queue not in self.unknown_queues


def index_claims(
    claims: Mapping[str, tuple[ClaimView, ...] | None], pools: Sequence[PoolPolicy] = ()
) -> ClaimIndex:
    """Group claims by owning pool (see :class:`ClaimIndex`); a job claimed twice keeps its newest
    launch. Without ``pools`` every claim stays with the pool named in it."""
    per_job = {p.name for p in pools if p.mode == "per-job"}
    queue_owner: dict[str, str] = {}
    for p in pools:
        if p.mode == "per-job":
            for q in p.queues:
                queue_owner.setdefault(q, p.name)
    unknown = frozenset(q for q, cs in claims.items() if cs is None)
    newest: dict[str, ClaimView] = {}
    for queue in sorted(claims):
        for c in claims[queue] or ():
            old = newest.get(c.job)
            if old is None or (c.launch, c.claimed_at) > (old.launch, old.claimed_at):
                newest[c.job] = c
    by_pool: dict[str, list[ClaimView]] = {}
    ownerless: list[ClaimView] = []
    for c in sorted(newest.values(), key=lambda c: (c.claimed_at, c.job)):
        if not pools or c.pool in per_job:
            by_pool.setdefault(c.pool, []).append(c)
        elif (owner := queue_owner.get(c.queue)) is not None:
            by_pool.setdefault(owner, []).append(c)
        else:
            ownerless.append(c)
    return ClaimIndex(by_pool, unknown, ownerless)
