"""The GitHub side of one scaler process, assembled from the settings: the API client, the
ledger, the webhook endpoint, the runner launcher and the resync of queued jobs.

:meth:`GitHubRuntime.resync` lists the queued jobs of every allowed repository through the API
and queues each one a pool takes, exactly as its webhook would have (the message id makes a job
already known a no-op): a job whose webhook was lost still gets a runner. The service runs it at
start-up and every ``github.resync_interval`` while it leads. The repositories are those named in
the allow-lists and those of the allowed organizations (GitHub has no call for an organization's
queued jobs: :mod:`scaler.github.catalog` lists its repositories, kept a few minutes).

Each resync spends the GitHub budget. A named repository costs two listings of runs (``queued``
and ``in_progress``: a started run may have jobs queued behind ``needs:``); a repository found
through its organization costs one (``queued`` runs only), so an idle one costs one call, and a
job the scaler counts as queued that this listing does not show costs one call to ask for it
before it is dropped; each run listed costs one more call for its jobs. A resync stops while
fewer than :data:`BUDGET_RESERVE` of the budget remain, so that launches keep their calls. A
rate-limited resync is skipped until the limit lifts; the remaining budget is exported after
every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from functools import partial

import redis.asyncio as aioredis
import structlog

from scaler.config import Settings
from scaler.github.auth import AppAuth, Auth, TokenAuth
from scaler.github.catalog import OrganizationRepositories
from scaler.github.client import GitHubClient
from scaler.github.deliveries import Deliveries
from scaler.github.demand import prune, top_up
from scaler.github.errors import GitHubError, RateLimited
from scaler.github.events import JobAction, WorkflowJobEvent
from scaler.github.launcher import RunnerLauncher
from scaler.github.ledger import JobRef, Ledger
from scaler.github.routing import Refused, route
from scaler.github.webhook import GitHubWebhook, pool_rules
from scaler.secret import Secret
from scaler.telemetry.metrics import Metrics

__all__ = ["BUDGET_RESERVE", "GitHubRuntime", "github_auth"]

log = structlog.get_logger(__name__)

BUDGET_RESERVE = 0.1
"""The share of the primary budget a resync leaves for launches (it stops below it)."""


def github_auth(settings: Settings) -> Auth:
    """The App or token auth of ``[github]`` (the config checks made sure one is complete)."""
    g = settings.github
    if g.uses_app:
        assert g.app_id is not None and g.installation_id is not None
        assert g.private_key is not None
        return AppAuth(g.app_id, g.private_key, g.installation_id)
    assert g.token is not None
    return TokenAuth(g.token)


class GitHubRuntime:
    """See the module docstring. ``None`` of it exists unless a github pool is configured."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        metrics: Metrics,
        *,
        client: GitHubClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        g = settings.github
        self.settings = settings
        self.metrics = metrics
        self.pools = [p for p in settings.pools if p.is_github]
        self.rules, self.queues = pool_rules(self.pools)
        self.client = client or GitHubClient(
            github_auth(settings), api_url=g.api_url, max_wait_s=g.max_wait,
            observer=self._observe_call,
        )
        self.ledger = Ledger(redis, namespace=settings.redis.namespace,
                             prefix=settings.redis.prefix, clock=clock)
        self.webhook = GitHubWebhook(
            secret=g.webhook_secret or Secret(""), rules=self.rules, queues=self.queues,
            ledger=self.ledger, deliveries=Deliveries(redis, settings.redis.prefix, clock=clock),
            metrics=metrics,
        )
        self.launcher = RunnerLauncher(self.client, self.ledger, metrics)
        self.organizations = OrganizationRepositories(
            self.client, {o for p in self.pools for o in p.organizations}, clock=clock)
        self._clock = clock
        self.problem: str | None = None
        metrics.initialize_github([p.name for p in self.pools])

    def _observe_call(self, operation: str, status: int | None) -> None:
        self.metrics.github_api_calls.labels(operation, str(status or "error")).inc()
        # A refused credential stays refused until the operator acts: /readyz names it once.
        if status == 401:
            if self.problem is None:
                log.error("github refused the scaler's credentials", operation=operation)
            self.problem = ("github: the API refused the credentials (401); check [github] "
                            "app_id, installation_id and the private key, or the token")
        elif status is not None and status < 300:
            self.problem = None
        budget = self.client.budget if hasattr(self, "client") else None
        if budget is not None:
            self.metrics.github_rate_remaining.set(budget.remaining)
            self.metrics.github_rate_limit.set(budget.limit)

    def repositories(self) -> list[str]:
        """The repositories named in the github pools' allow-lists (listed by every resync)."""
        return sorted({r for p in self.pools for r in p.repositories})

    async def resync_repositories(self) -> list[tuple[str, bool]]:
        """What a resync lists: each repository named in an allow-list, then each repository of
        an allowed organization not named (from a list renewed every few minutes, see
        :mod:`scaler.github.catalog`), with whether it was named."""
        named = self.repositories()
        seen = {r.lower() for r in named}
        found = [r for r in await self.organizations.names() if r.lower() not in seen]
        return [(r, True) for r in named] + [(r, False) for r in found]

    def _budget_low(self) -> bool:
        budget = self.client.budget
        # A budget last seen before its reset is whole again: a stale report must not stop
        # every later resync.
        return (budget is not None and self._clock() < budget.reset_at
                and budget.remaining < budget.limit * BUDGET_RESERVE)

    async def resync(self) -> int:
        """List the queued jobs of the allowed repositories (those named, and those of the
        allowed organizations) and queue those a pool takes and that were not known. Returns how
        many were new. Spends the GitHub budget: see the module docstring."""
        new = 0
        for repository, named in await self.resync_repositories():
            if self.client.ready_at() > self._clock():
                log.info("github resync skipped: rate limited", repository=repository)
                break
            if self._budget_low():
                log.warning("github resync stopped: the API budget is kept for launches",
                            repository=repository)
                break
            try:
                # A repository found through its organization: one listing (queued runs only).
                jobs = await self.client.list_queued_jobs(
                    repository, ("queued", "in_progress") if named else ("queued",))
            except RateLimited as exc:
                log.warning("github resync stopped: rate limited", repository=repository,
                            retry_at=exc.retry_at)
                break
            except GitHubError as exc:
                log.warning("github resync failed", repository=repository, error=str(exc))
                continue
            owner = repository.partition("/")[0]
            for pool in self.pools:
                if (repository in pool.repositories
                        or owner.lower() in {o.lower() for o in pool.organizations}):
                    # A listing of queued runs only may miss a queued job: each job it does not
                    # show is asked for (one call) before it is dropped.
                    await prune(self.ledger, pool.name, self.queues[pool.name], repository,
                                {j.job_id for j in jobs},
                                None if named else partial(self._still_queued, repository))
            for job in jobs:
                event = _as_event(job.job_id, job.run_id, repository, owner, job.labels,
                                  fork=job.head_repository not in (None, repository))
                routed = route(event, self.rules)
                if isinstance(routed, Refused):
                    continue  # refused when its webhook came, or would be: not counted twice
                queued = await self.ledger.queue(
                    routed.pool, self.queues[routed.pool],
                    JobRef(job.job_id, job.run_id, repository, job.labels))
                if queued:
                    new += 1
                    self.metrics.github_jobs_queued.labels(routed.pool, "resync").inc()
                    log.info("github job queued by resync (its webhook never came)",
                             pool=routed.pool, job_id=job.job_id, repository=repository)
        for pool in self.pools:
            await top_up(self.ledger, pool.name, self.queues[pool.name])
        return new

    async def _still_queued(self, repository: str, job_id: int) -> bool:
        """Whether GitHub still has the job queued (``True`` when it cannot say: kept)."""
        try:
            return await self.client.get_job_status(repository, job_id) == "queued"
        except GitHubError as exc:
            log.warning("github job status unknown; kept as queued", job_id=job_id,
                        repository=repository, error=str(exc))
            return True

    async def run_resync(self, is_leader: Callable[[], bool], stop: asyncio.Event) -> None:
        """Resync as soon as this replica leads, then every ``github.resync_interval`` while it
        leads, until ``stop``."""
        interval = self.settings.github.resync_interval
        while not stop.is_set():
            leading = is_leader()
            if leading:
                try:
                    await self.resync()
                except Exception as exc:  # a resync must never take the process down
                    log.error("github resync failed", error=type(exc).__name__)
            # A follower looks again soon: a replica that gains the lead resyncs at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval if leading else
                                       min(interval, 1.0))

    async def aclose(self) -> None:
        """Close the API client."""
        await self.client.aclose()


def _as_event(job_id: int, run_id: int, repository: str, owner: str, labels: tuple[str, ...],
              *, fork: bool) -> WorkflowJobEvent:
    """A listed job as the webhook would have delivered it (what routing reads). A job whose
    code comes from another repository (a pull request from a fork) is routed as a fork's."""
    return WorkflowJobEvent(
        delivery_id="resync", action=JobAction.QUEUED, job_id=job_id, run_id=run_id,
        run_attempt=1, job_name="", workflow_name=None, status="queued", conclusion=None,
        labels=labels, repository=repository, owner=owner, organization=None, fork=fork,
        private=False, installation_id=None, runner_id=None, runner_name=None,
        runner_group_id=None, created_at=None,
    )
