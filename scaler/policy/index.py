"""Indexes built once per plan, so every rule is a dictionary lookup (no quadratic scans)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scaler.policy.states import is_gone
from scaler.policy.types import ClaimView, MachineView, Observation, PoolPolicy

__all__ = ["AppIndex", "ClaimIndex", "index_apps", "index_claims"]


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
    known = {p.name: p.app for p in pools}
    out: dict[str, AppIndex] = {}
    for app in sorted(obs.machines_by_app):
        machines = obs.machines_by_app[app]
        if machines is None:
            continue
        idx = AppIndex()
        seen: set[str] = set()
        for m in sorted(machines, key=lambda m: m.id):
            if m.id in seen:
                continue
            seen.add(m.id)
            idx.by_id[m.id] = m
            if _prefer(idx.by_name.get(m.name), m):
                idx.by_name[m.name] = m
            if m.job is not None and _prefer(idx.by_job.get((m.job, m.launch)), m):
                idx.by_job[(m.job, m.launch)] = m
            pool = m.pool if m.pool is not None and known.get(m.pool) == app else None
            idx.by_pool.setdefault(pool, []).append(m)
        out[app] = idx
    return out


@dataclass(slots=True)
class ClaimIndex:
    """Claims of readable queues grouped by pool (deduplicated by job, oldest first), and the set
    of queues whose claims could not be read."""

    by_pool: dict[str, list[ClaimView]] = field(default_factory=dict)
    unknown_queues: frozenset[str] = frozenset()

    def known(self, queue: str | None) -> bool:
        """Whether the claims of ``queue`` were read (``None``: of every queue)."""
        if queue is None:
            return not self.unknown_queues
        return queue not in self.unknown_queues


def index_claims(claims: Mapping[str, tuple[ClaimView, ...] | None]) -> ClaimIndex:
    """Group claims by pool; a job claimed twice keeps its newest launch."""
    unknown = frozenset(q for q, cs in claims.items() if cs is None)
    newest: dict[str, ClaimView] = {}
    for queue in sorted(claims):
        for c in claims[queue] or ():
            old = newest.get(c.job)
            if old is None or (c.launch, c.claimed_at) > (old.launch, old.claimed_at):
                newest[c.job] = c
    by_pool: dict[str, list[ClaimView]] = {}
    for c in sorted(newest.values(), key=lambda c: (c.claimed_at, c.job)):
        by_pool.setdefault(c.pool, []).append(c)
    return ClaimIndex(by_pool, unknown)
