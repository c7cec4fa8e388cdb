"""What the GitHub client takes and answers: scopes, JIT configs, queued jobs, runners; and the
wire shapes of GitHub's answers (pydantic, unknown fields ignored)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, RootModel, StrictBool, StrictInt, StrictStr

from scaler.secret import Secret

__all__ = [
    "ACCOUNT_LOGIN", "REPOSITORY_NAME", "JitConfig", "QueuedJob", "Repository", "Runner", "Scope",
]

REPOSITORY_NAME = re.compile(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+")
"""``owner/name`` as GitHub allows them (what becomes an API path)."""
ACCOUNT_LOGIN = re.compile(r"[A-Za-z0-9-]+")
"""A user's or an organization's login."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Where runners are registered: a repository (``owner/name``) or an organization."""

    kind: Literal["repo", "org"]
    name: str

    @classmethod
    def repo(cls, full_name: str) -> Scope:
        """A repository, ``owner/name``."""
        if not REPOSITORY_NAME.fullmatch(full_name) or full_name.endswith(("/.", "/..")):
            raise ValueError(f"repository {full_name!r} must be 'owner/name'")
        return cls("repo", full_name)

    @classmethod
    def org(cls, login: str) -> Scope:
        """An organization, by login."""
        if not ACCOUNT_LOGIN.fullmatch(login):
            raise ValueError(f"organization {login!r} must be a login (letters, digits, dashes)")
        return cls("org", login)

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``owner/name`` as a repository, anything else as an organization login."""
        return cls.repo(text) if "/" in text else cls.org(text)

    @property
    def path(self) -> str:
        """The API path of the scope: ``/repos/owner/name`` or ``/orgs/login``."""
        return f"/repos/{self.name}" if self.kind == "repo" else f"/orgs/{self.name}"


@dataclass(frozen=True, slots=True)
class JitConfig:
    """A runner registered just in time: hand ``encoded_jit_config`` to ``run.sh --jitconfig``.

    The config holds the runner's credentials: it stays a :class:`Secret` until the one place
    it leaves the process (the machine's environment).
    """

    runner_id: int
    runner_name: str
    labels: tuple[str, ...]
    encoded_jit_config: Secret


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job waiting for a runner, found by listing (the webhook's fallback).

    ``event`` is what started the run (``push``, ``pull_request``, ...); ``head_repository`` the
    repository its code comes from, which differs from ``repository`` for a pull request from a
    fork.
    """

    job_id: int
    run_id: int
    repository: str
    name: str
    labels: tuple[str, ...]
    event: str | None
    head_repository: str | None


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository as a listing shows it: ``full_name`` (``owner/name``, GitHub's spelling) and
    its owner's login. An archived or disabled repository runs no workflow."""

    full_name: str
    owner: str
    archived: bool = False
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Runner:
    """A self-hosted runner registered in a scope."""

    runner_id: int
    name: str
    status: str
    busy: bool
    labels: tuple[str, ...]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TokenWire(_Wire):
    """``POST /app/installations/{id}/access_tokens`` -> 201."""

    token: StrictStr
    expires_at: StrictStr


class LabelWire(_Wire):
    """A runner's label: ``{id, name, type}``."""

    name: StrictStr


class RunnerWire(_Wire):
    """A runner as GitHub describes it."""

    id: StrictInt
    name: StrictStr
    status: StrictStr = "offline"
    busy: StrictBool = False
    labels: list[LabelWire] = []

    def runner(self) -> Runner:
        """The public view."""
        return Runner(self.id, self.name, self.status, self.busy,
                      tuple(label.name for label in self.labels))


class JitConfigWire(_Wire):
    """``POST .../actions/runners/generate-jitconfig`` -> 201."""

    runner: RunnerWire
    encoded_jit_config: StrictStr


class RunnersPageWire(_Wire):
    """``GET .../actions/runners``."""

    total_count: StrictInt
    runners: list[RunnerWire]


class RepositoryRefWire(_Wire):
    """A repository inside a workflow run."""

    full_name: StrictStr


class RunWire(_Wire):
    """A workflow run (the fields read)."""

    id: StrictInt
    status: StrictStr | None = None
    event: StrictStr | None = None
    head_repository: RepositoryRefWire | None = None


class RunsPageWire(_Wire):
    """``GET /repos/{owner}/{repo}/actions/runs``."""

    total_count: StrictInt
    workflow_runs: list[RunWire]


class JobWire(_Wire):
    """A workflow job (the fields read)."""

    id: StrictInt
    run_id: StrictInt
    name: StrictStr
    status: StrictStr
    labels: list[StrictStr]


class JobsPageWire(_Wire):
    """``GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs``."""

    total_count: StrictInt
    jobs: list[JobWire]


class OwnerWire(_Wire):
    """A repository's owner (the field read)."""

    login: StrictStr


class RepositoryWire(_Wire):
    """A repository in a listing (the fields read)."""

    full_name: StrictStr
    owner: OwnerWire
    archived: StrictBool = False
    disabled: StrictBool = False

    def repository(self) -> Repository:
        """The public view."""
        return Repository(self.full_name, self.owner.login, self.archived, self.disabled)


class InstallationRepositoriesWire(_Wire):
    """``GET /installation/repositories``."""

    total_count: StrictInt
    repositories: list[RepositoryWire]


class RepositoryListWire(RootModel[list[RepositoryWire]]):
    """``GET /orgs/{org}/repos``: a JSON array."""
