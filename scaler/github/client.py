"""The GitHub REST client for runners: JIT configs, queued jobs, runner removal, repository
listings (httpx, async).

``GitHubClient(auth, api_url=...)`` takes an :class:`~scaler.github.auth.AppAuth` (installation
tokens fetched and cached, see :mod:`scaler.github.auth`) or a
:class:`~scaler.github.auth.TokenAuth`. ``api_url`` is ``https://api.github.com`` or a GitHub
Enterprise Server's ``https://HOST/api/v3``.

Rate limits (:mod:`scaler.github.ratelimit`): a refused call waits as GitHub asks and is tried
again (at most ``max_rate_retries`` times); a call whose wait would pass ``max_wait_s`` raises
:class:`~scaler.github.errors.RateLimited` with ``retry_at`` instead of blocking its caller, and
every call before that time raises it too without sending anything. :attr:`GitHubClient.budget`
is the primary budget as last reported, for a metric. Other errors are not retried: creating a
JIT config is not idempotent (a repeat registers a second runner or answers 409 for the name).
A 401 with App auth drops the cached token and tries once more with a new one.

Inject ``clock`` (epoch seconds: GitHub's resets and expiries are wall-clock) and ``sleep`` in
tests; ``transport`` is passed to httpx; ``observer(operation, status)`` is told of every
attempt (``None``: no answer), for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from scaler.github.auth import AppAuth, Auth, InstallationToken, TokenAuth, parse_timestamp
from scaler.github.errors import GitHubAPIError, GitHubTransportError, RateLimited
from scaler.github.models import (
    InstallationRepositoriesWire,
    JitConfig,
    JitConfigWire,
    JobsPageWire,
    JobWire,
    QueuedJob,
    Repository,
    RepositoryListWire,
    RepositoryRefWire,
    Runner,
    RunnersPageWire,
    RunsPageWire,
    Scope,
    TokenWire,
)
from scaler.github.ratelimit import RateBudget, RateGate
from scaler.secret import Secret

__all__ = ["API_VERSION", "DEFAULT_API_URL", "GitHubClient"]

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 10
"""Pages followed per listing (1,000 items): a bound, not an expectation."""

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class GitHubClient:
    """See the module docstring. Use as ``async with GitHubClient(...) as gh:`` or call
    :meth:`aclose`."""

    def __init__(
        self,
        auth: Auth,
        *,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 30.0,
        max_wait_s: float = 120.0,
        max_rate_retries: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "fly-scaler",
        observer: Callable[[str, int | None], None] | None = None,
    ) -> None:
        url = api_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"api_url={url!r} must start with https:// (or http:// locally)")
        self.api_url = url
        self._auth = auth
        self._max_wait_s = max_wait_s
        self._max_rate_retries = max_rate_retries
        self._clock = clock
        self._sleep = sleep
        self._observer = observer
        self._http = httpx.AsyncClient(
            base_url=url, timeout=timeout, transport=transport, follow_redirects=False,
            headers={"Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": API_VERSION, "User-Agent": user_agent},
        )
        self._gate = RateGate()
        self._app_gate = RateGate()  # the App's JWT has its own budget
        self._token: InstallationToken | None = None
        self._token_lock = asyncio.Lock()

    @property
    def budget(self) -> RateBudget | None:
        """The ``core`` primary rate-limit budget as GitHub last reported it (for a metric)."""
        return self._gate.budget

    @property
    def uses_app(self) -> bool:
        """Whether calls carry a GitHub App installation's token (else a personal token)."""
        return isinstance(self._auth, AppAuth)

    def ready_at(self) -> float:
        """When the next call may be sent (epoch seconds; the past means now)."""
        return self._gate.ready_at(self._clock())

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"GitHubClient(api_url={self.api_url!r}, auth={self._auth!r})"

    # -- operations -----------------------------------------------------------------------------

    async def generate_jitconfig(
        self,
        scope: Scope,
        name: str,
        labels: Sequence[str],
        runner_group_id: int = 1,
        work_folder: str = "_work",
    ) -> JitConfig:
        """Register an ephemeral runner ``name`` with ``labels`` in ``scope`` (runner group 1 is
        the default group) and return its JIT config. A name already registered in the scope
        answers 409 (:class:`~scaler.github.errors.GitHubAPIError`)."""
        if not name or not labels:
            raise ValueError("a JIT runner needs a name and at least one label")
        body = {"name": name, "runner_group_id": runner_group_id, "labels": list(labels),
                "work_folder": work_folder}
        op = "generate_jitconfig"
        response = await self._call(op, "POST", f"{scope.path}/actions/runners/generate-jitconfig",
                                    json=body, expect=201)
        wire = _model(op, JitConfigWire, response)
        return JitConfig(
            runner_id=wire.runner.id,
            runner_name=wire.runner.name,
            labels=tuple(label.name for label in wire.runner.labels),
            encoded_jit_config=Secret(wire.encoded_jit_config),
        )

    async def remove_runner(self, scope: Scope, runner_id: int) -> bool:
        """Delete a runner's registration: ``True`` if removed, ``False`` if it was already gone
        (an ephemeral runner removes itself after its job). A runner still running a job answers
        422."""
        op = "remove_runner"
        try:
            await self._call(op, "DELETE", f"{scope.path}/actions/runners/{runner_id}", expect=204)
        except GitHubAPIError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    async def list_runners(self, scope: Scope) -> list[Runner]:
        """Every self-hosted runner registered in ``scope``."""
        op = "list_runners"
        runners: list[Runner] = []
        async for response in self._pages(op, f"{scope.path}/actions/runners", {}):
            runners.extend(r.runner() for r in _model(op, RunnersPageWire, response).runners)
        return runners

    async def list_queued_jobs(
        self, repository: str, run_statuses: Iterable[str] = ("queued", "in_progress")
    ) -> list[QueuedJob]:
        """Jobs of ``repository`` (``owner/name``) with status ``queued``, from its workflow
        runs with the given statuses: a run stays ``in_progress`` while later jobs of it (after
        ``needs:``, or past ``max-parallel``) queue. Costs one listing per status and one call per
        run; pass ``("queued",)`` to spend less and see only runs that have not started."""
        scope = Scope.repo(repository)
        jobs: list[QueuedJob] = []
        for status in run_statuses:
            async for page in self._pages("list_workflow_runs", f"{scope.path}/actions/runs",
                                          {"status": status}):
                for run in _model("list_workflow_runs", RunsPageWire, page).workflow_runs:
                    jobs.extend(await self._queued_jobs_of(scope, run.id, run.event,
                                                           run.head_repository))
        return jobs

    async def get_job_status(self, repository: str, job_id: int) -> str | None:
        """The status of job ``job_id`` of ``repository`` (``queued``, ``in_progress``,
        ``completed``, ...), or ``None`` when GitHub does not know it there (404). One call."""
        op = "get_job"
        try:
            response = await self._call(
                op, "GET", f"{Scope.repo(repository).path}/actions/jobs/{job_id}", expect=200)
        except GitHubAPIError as exc:
            if exc.status_code == 404:
                return None
            raise
        return _model(op, JobWire, response).status

    async def list_installation_repositories(self) -> list[Repository]:
        """Every repository the App's installation may reach (``GET /installation/repositories``:
        App auth only, a personal token is answered 403). One call per 100 repositories."""
        op = "list_installation_repositories"
        found: list[Repository] = []
        async for page in self._pages(op, "/installation/repositories", {}):
            found.extend(r.repository()
                         for r in _model(op, InstallationRepositoriesWire, page).repositories)
        return found

    async def list_org_repositories(self, organization: str) -> list[Repository]:
        """The repositories of ``organization`` (a login) the credential may see
        (``GET /orgs/{org}/repos``; 404 for an unknown organization or a user's login). One call
        per 100 repositories."""
        op = "list_org_repositories"
        found: list[Repository] = []
        async for page in self._pages(op, f"{Scope.org(organization).path}/repos",
                                      {"type": "all"}):
            found.extend(r.repository() for r in _model(op, RepositoryListWire, page).root)
        return found

    async def _queued_jobs_of(
        self, scope: Scope, run_id: int, event: str | None, head: RepositoryRefWire | None
    ) -> list[QueuedJob]:
        op = "list_jobs_for_workflow_run"
        found: list[QueuedJob] = []
        async for page in self._pages(op, f"{scope.path}/actions/runs/{run_id}/jobs",
                                      {"filter": "latest"}):
            for job in _model(op, JobsPageWire, page).jobs:
                if job.status == "queued":
                    found.append(QueuedJob(
                        job_id=job.id, run_id=job.run_id, repository=scope.name, name=job.name,
                        labels=tuple(job.labels), event=event,
                        head_repository=head.full_name if head is not None else None,
                    ))
        return found

    # -- the transport --------------------------------------------------------------------------

    async def _pages(
        self, op: str, path: str, params: dict[str, Any]
    ) -> AsyncIterator[httpx.Response]:
        """Each page of a listing, following ``Link: rel="next"`` within the API only."""
        url: str | None = path
        query: dict[str, Any] | None = {**params, "per_page": PER_PAGE}
        for _ in range(MAX_PAGES):
            if url is None:
                return
            response = await self._call(op, "GET", url, params=query, expect=200)
            yield response
            url, query = self._next_page(response), None
        if url is not None:
            log.warning("github listing truncated", extra={"operation": op, "pages": MAX_PAGES})

    def _next_page(self, response: httpx.Response) -> str | None:
        link = response.links.get("next", {}).get("url")
        # Never send the token to a host the Link header names if it is not the API's.
        if link is None or not (link == self.api_url or link.startswith(self.api_url + "/")):
            return None
        return link

    async def _call(
        self,
        op: str,
        method: str,
        url: str,
        *,
        expect: int,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        retried_auth = False
        while True:
            authorization = await self._authorization()
            response = await self._send(op, self._gate, method, url, authorization,
                                        json=json, params=params)
            if (response.status_code == 401 and isinstance(self._auth, AppAuth)
                    and not retried_auth):
                # The installation token was revoked or lapsed early: fetch a new one, once.
                retried_auth = True
                self._token = None
                continue
            if response.status_code != expect:
                raise GitHubAPIError(op, response.status_code, _message(response))
            return response

    async def _send(
        self,
        op: str,
        gate: RateGate,
        method: str,
        url: str,
        authorization: Secret,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One request, waiting out rate limits before and after (see the module docstring)."""
        refusals = 0
        while True:
            await self._wait(op, gate)
            headers = {"Authorization": f"Bearer {authorization.get_secret_value()}"}
            try:
                response = await self._http.request(method, url, json=json, params=params,
                                                    headers=headers)
            except httpx.TransportError as exc:
                if self._observer is not None:
                    self._observer(op, None)
                raise GitHubTransportError(op, type(exc).__name__) from None
            refusal = gate.observe(response.status_code, response.headers, _message(response),
                                   self._clock())
            if self._observer is not None:
                self._observer(op, response.status_code)
            if refusal is None:
                return response
            refusals += 1
            log.warning(
                "github rate limit: operation %s got %s, holding calls back %.0f s",
                op, refusal.status_code, max(0.0, refusal.until - self._clock()),
            )
            if refusals > self._max_rate_retries:
                raise RateLimited(op, refusal.status_code, refusal.message, refusal.until)

    async def _wait(self, op: str, gate: RateGate) -> None:
        now = self._clock()
        ready = gate.ready_at(now)
        if ready <= now:
            return
        if ready - now > self._max_wait_s:
            last = gate.last_refusal
            raise RateLimited(op, last.status_code if last else 403,
                              last.message if last else "rate limit budget spent", ready)
        await self._sleep(ready - now)

    async def _authorization(self) -> Secret:
        if isinstance(self._auth, TokenAuth):
            return self._auth.token
        token = self._token
        if token is not None and token.usable(self._clock()):
            return token.token
        async with self._token_lock:  # one refresh, however many calls need it at once
            token = self._token
            if token is None or not token.usable(self._clock()):
                token = await self._fetch_token(self._auth)
                self._token = token
            return token.token

    async def _fetch_token(self, auth: AppAuth) -> InstallationToken:
        op = "create_installation_token"
        response = await self._send(
            op, self._app_gate, "POST", f"/app/installations/{auth.installation_id}/access_tokens",
            auth.jwt(self._clock()),
        )
        if response.status_code != 201:
            raise GitHubAPIError(op, response.status_code, _message(response))
        wire = _model(op, TokenWire, response)
        try:
            expires_at = parse_timestamp(wire.expires_at)
        except ValueError:
            raise GitHubAPIError(op, 201, "expires_at is not a timestamp") from None
        return InstallationToken(Secret(wire.token), expires_at)


def _message(response: httpx.Response) -> str | None:
    """GitHub's ``message`` from an error body (never a success body: it may hold a secret)."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    message = body.get("message") if isinstance(body, dict) else None
    return message[:300] if isinstance(message, str) else None


def _model(op: str, model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        # Only the locations: the input (a token, a JIT config) must not reach the message.
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise GitHubAPIError(op, response.status_code,
                             f"unexpected answer (fields: {', '.join(fields)})") from None
