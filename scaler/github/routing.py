"""Which runner pool takes a ``workflow_job``: pure functions over the event and the rules.

A :class:`RunnerPoolRule` serves a set of labels for an allow-list of repositories
(``owner/name``) and organizations (account logins: a repository is allowed when its owner is
listed, an organization or a user). :func:`route` tries the rules in order and the first that
accepts the job wins, so the order of the configuration decides between overlapping pools.

Labels. A job goes to a pool only when the pool serves **every** label of its ``runs-on``; as on
GitHub, labels compare case-insensitively. ``self-hosted`` is served by every pool: GitHub gives
that label to every self-hosted runner, and the runners launched for a pool are registered with it
(:meth:`RunnerPoolRule.runner_labels`), so a job asking for ``[self-hosted, fly]`` and one asking
for ``[fly]`` both match a pool serving ``fly``. A job whose only label is ``self-hosted`` would
match any pool and is refused instead (reason ``labels``): it asks for no pool in particular.
Jobs for GitHub-hosted runners (``ubuntu-latest``) match no pool unless one claims that label.

Forks. ``allow_forks`` is about the repository the job runs in (``repository.fork`` in the
delivery): a fork inside an allowed organization is refused unless the pool allows forks. A pull
request *from* a fork runs in the base repository, which is not a fork: the delivery does not say
where the code came from. Keep GitHub's "require approval for fork pull request workflows" on for
public repositories, or look at the run's ``head_repository`` before launching.

Refusal reasons form a fixed set (a metric label): ``labels`` (no pool serves them all),
``repository`` (a pool serves the labels but not this repository or its owner), ``fork`` (a pool
would take it, but not from a fork). The reason is the furthest any rule got.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scaler.github.events import WorkflowJobEvent
from scaler.github.models import ACCOUNT_LOGIN, REPOSITORY_NAME

__all__ = [
    "SELF_HOSTED",
    "RefusalReason",
    "Refused",
    "Routed",
    "RunnerPoolRule",
    "route",
]

SELF_HOSTED = "self-hosted"


class RefusalReason(enum.StrEnum):
    """Why no pool takes a job (ordered: a later stage is a closer match)."""

    LABELS = "labels"
    REPOSITORY = "repository"
    FORK = "fork"


_STAGE = {RefusalReason.LABELS: 0, RefusalReason.REPOSITORY: 1, RefusalReason.FORK: 2}


def _lowered(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values)


@dataclass(frozen=True, slots=True, init=False)
class RunnerPoolRule:
    """A pool's claim on jobs: labels served, who may use it, and whether forks may.

    Values are normalised to lower case (GitHub's names are case-insensitive). A rule must allow
    at least one repository or organization: a pool open to every repository would run anyone's
    workflow on our machines.
    """

    pool: str
    labels: frozenset[str]
    repositories: frozenset[str]
    organizations: frozenset[str]
    allow_forks: bool

    def __init__(
        self,
        pool: str,
        labels: Iterable[str],
        repositories: Iterable[str] = (),
        organizations: Iterable[str] = (),
        allow_forks: bool = False,
    ) -> None:
        labels_ = _lowered(labels) - {SELF_HOSTED}
        repositories_, organizations_ = _lowered(repositories), _lowered(organizations)
        if not pool:
            raise ValueError("a runner pool rule needs a pool name")
        if not labels_ or "" in labels_:
            raise ValueError(f"pool {pool!r}: labels must name at least one label besides "
                             f"{SELF_HOSTED!r}, and no empty one")
        if not repositories_ and not organizations_:
            raise ValueError(f"pool {pool!r}: allow at least one repository or organization")
        bad = sorted(r for r in repositories_ if not REPOSITORY_NAME.fullmatch(r))
        if bad:
            raise ValueError(f"pool {pool!r}: repositories must be 'owner/name', not {bad}")
        bad = sorted(o for o in organizations_ if not ACCOUNT_LOGIN.fullmatch(o))
        if bad:
            raise ValueError(f"pool {pool!r}: organizations must be account logins, not {bad}")
        object.__setattr__(self, "pool", pool)
        object.__setattr__(self, "labels", labels_)
        object.__setattr__(self, "repositories", repositories_)
        object.__setattr__(self, "organizations", organizations_)
        object.__setattr__(self, "allow_forks", allow_forks)

    def runner_labels(self) -> tuple[str, ...]:
        """The labels to register a runner of this pool with: ``self-hosted`` and every served
        label, sorted (what a JIT config request sends)."""
        return (SELF_HOSTED, *sorted(self.labels))

    def refusal(self, event: WorkflowJobEvent) -> RefusalReason | None:
        """Why this rule does not take ``event``, or ``None`` when it does."""
        wanted = _lowered(event.labels) - {SELF_HOSTED}
        if not wanted or not wanted <= self.labels:
            return RefusalReason.LABELS
        if (event.repository.lower() not in self.repositories
                and event.owner.lower() not in self.organizations):
            return RefusalReason.REPOSITORY
        if event.fork and not self.allow_forks:
            return RefusalReason.FORK
        return None


@dataclass(frozen=True, slots=True)
class Routed:
    """The job goes to ``rule.pool``."""

    rule: RunnerPoolRule

    @property
    def pool(self) -> str:
        """The pool's name."""
        return self.rule.pool


@dataclass(frozen=True, slots=True)
class Refused:
    """No pool takes the job; ``reason`` is the closest miss."""

    reason: RefusalReason


def route(event: WorkflowJobEvent, rules: Sequence[RunnerPoolRule]) -> Routed | Refused:
    """The first rule that takes ``event``, or why none does (``labels`` when there are none)."""
    closest = RefusalReason.LABELS
    for rule in rules:
        reason = rule.refusal(event)
        if reason is None:
            return Routed(rule)
        if _STAGE[reason] > _STAGE[closest]:
            closest = reason
    return Refused(closest)
