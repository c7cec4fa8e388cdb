"""The repositories of the organizations in the github pools' allow-lists, for the resync.

GitHub has no call listing an organization's queued jobs, so the resync lists each repository's.
:class:`OrganizationRepositories` finds the repositories: with App auth, one listing of the
installation's repositories (``GET /installation/repositories``) kept to those the allowed
organizations own; with a token, each organization's listing (``GET /orgs/{org}/repos``).
Archived and disabled repositories run no workflow and are left out.

Every listing spends the GitHub budget (one call per 100 repositories), so a list is kept for
:data:`LIST_TTL_S` between resyncs: a repository created meanwhile is resynced once the list is
renewed (its webhooks still come at once). A listing that fails keeps the last list and is tried
again after :data:`RETRY_AFTER_S` (after the TTL when GitHub answered 404: a user's login, with a
token); the error is logged (GitHub's message, never a credential).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

import structlog

from scaler.github.client import GitHubClient
from scaler.github.errors import GitHubAPIError, GitHubError
from scaler.github.models import REPOSITORY_NAME, Repository

__all__ = ["LIST_TTL_S", "RETRY_AFTER_S", "OrganizationRepositories"]

log = structlog.get_logger(__name__)

LIST_TTL_S = 300.0
"""How long a listing of repositories is used before it is renewed."""
RETRY_AFTER_S = 60.0
"""How long after a failed listing it is tried again."""
_INSTALLATION = ""


class OrganizationRepositories:
    """See the module docstring. ``organizations`` are logins (compared case-insensitively);
    ``clock`` is epoch seconds."""

    def __init__(
        self,
        client: GitHubClient,
        organizations: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        ttl_s: float = LIST_TTL_S,
    ) -> None:
        self.client = client
        self.organizations = sorted({o.lower() for o in organizations})
        self._clock = clock
        self._ttl_s = ttl_s
        self._due: dict[str, float] = {}  # listing (an organization or the installation) -> when
        self._known: dict[str, list[str]] = {}  # organization -> its repositories' full names

    async def names(self) -> list[str]:
        """The repositories (``owner/name``, GitHub's spelling, sorted) of the allowed
        organizations, listed anew when the last list is older than the TTL."""
        if self.client.uses_app:
            listed = await self._list(_INSTALLATION, self.client.list_installation_repositories)
            if listed is not None:
                for org in self.organizations:
                    self._known[org] = _names(listed, org)
        else:
            for org in self.organizations:
                found = await self._list(org, partial(self.client.list_org_repositories, org))
                if found is not None:
                    self._known[org] = _names(found, org)
        return sorted({name for names in self._known.values() for name in names})

    async def _list(
        self, what: str, call: Callable[[], Awaitable[list[Repository]]]
    ) -> list[Repository] | None:
        now = self._clock()
        if not self.organizations or now < self._due.get(what, 0.0):
            return None
        try:
            found = await call()
        except GitHubError as exc:
            # A login GitHub does not know as an organization (a user's, with a token) stays so.
            gone = isinstance(exc, GitHubAPIError) and exc.status_code == 404
            self._due[what] = now + (self._ttl_s if gone else RETRY_AFTER_S)
            log.warning("github repositories not listed; the resync uses the last list",
                        organization=what or None, error=str(exc))
            return None
        self._due[what] = now + self._ttl_s
        return found


def _names(found: list[Repository], org: str) -> list[str]:
    """The full names of the repositories ``org`` owns that can run workflows."""
    return [r.full_name for r in found
            if r.owner.lower() == org and not (r.archived or r.disabled)
            and REPOSITORY_NAME.fullmatch(r.full_name)
            and r.full_name.partition("/")[0].lower() == org]
