"""The state behind the local GitHub stand-in: installations, tokens, workflow runs and jobs,
runners registered just in time, rate limits; and the shapes GitHub gives them.

:class:`LocalGitHub` is plain Python under one lock: the HTTP side
(:mod:`scaler.github.local_server`) calls it from the server's thread, tests and ``scaler dev``
call it from theirs (queue a job, see the runners, force a rate limit). Jobs, runs and runners are
serialised in the shapes of GitHub's documented examples (:func:`LocalGitHub.job_json`,
:meth:`LocalGitHub.webhook_payload`, in :mod:`scaler.github.local_shapes`), ids of jobs and runs
above 2^32 as on github.com.

A job's changes (queued, in_progress, completed) are told to ``listeners`` with its id and the
action, under the lock: :mod:`scaler.github.local_hooks` turns them into signed webhooks, and
:mod:`scaler.github.local_broker` hands queued jobs to the runners that registered.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from scaler.github.local_shapes import GitHubShapes, LocalRun, iso

__all__ = ["DEFAULT_LABELS", "ForcedLimit", "LocalGitHub", "Problem", "iso"]

DEFAULT_LABELS = frozenset({"self-hosted", "linux", "x64", "arm64", "macos", "windows"})
"""Labels GitHub marks ``read-only`` on a self-hosted runner (compared case-insensitively)."""
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes before "
                     "you try again.")
DOCS = "https://docs.github.com/rest"


class Problem(Exception):
    """An error answer: ``status`` and GitHub's ``message``; ``headers`` to add."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class ForcedLimit:
    """A rate-limit refusal the next calls get (``scaler dev`` and tests force them)."""

    kind: Literal["primary", "secondary"]
    status: int = 403
    retry_after: int | None = None
    reset_in: int = 60


@dataclass
class _Budget:
    limit: int
    remaining: int
    reset_at: float


class LocalGitHub(GitHubShapes):
    """GitHub as far as runners need it. ``clock`` is epoch seconds (inject a fake in tests)."""

    def __init__(
        self,
        *,
        app_id: str,
        installations: Iterable[int],
        static_tokens: Iterable[str] = (),
        token_ttl_s: float = 3600.0,
        rate_limit: int = 5000,
        clock: Callable[[], float] = time.time,
        installation_repositories: Mapping[int, Iterable[str]] | None = None,
    ) -> None:
        self.app_id = app_id
        self.installations = frozenset(installations)
        # An installation given here reaches these repositories only; any other, every one known.
        self.installation_repositories = {i: sorted(names) for i, names in
                                          (installation_repositories or {}).items()}
        self.static_tokens = frozenset(static_tokens)
        self.token_ttl_s = token_ttl_s
        self.rate_limit = rate_limit
        self.clock = clock
        self.lock = threading.RLock()
        self.tokens: dict[str, tuple[int, float]] = {}  # token -> (installation, expires_at)
        self.runs: dict[int, LocalRun] = {}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.runners: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self.jit_configs: dict[int, str] = {}  # runner id -> its encoded JIT config
        self.jit_requests: list[dict[str, Any]] = []  # generate-jitconfig bodies, as received
        self.requests: list[tuple[str, str, str]] = []  # (method, path, credential kind)
        self.forced: deque[ForcedLimit] = deque()
        self.runner_tokens: dict[str, int] = {}  # a JIT config's runner credential -> runner id
        self.listeners: list[Callable[[int, str], None]] = []  # (job id, action) on each change
        self.server_url = ""  # written into JIT configs, so that a runner finds the stand-in
        self._budgets: dict[str, _Budget] = {}
        self._job_ids = itertools.count(10_000_000_001)
        self._run_ids = itertools.count(5_000_000_001)
        self._runner_ids = itertools.count(1)
        self._label_ids = itertools.count(1)

    # -- admin: what a test or `scaler dev` does ------------------------------------------------

    def queue_job(
        self,
        repository: str,
        labels: Iterable[str],
        *,
        name: str = "build",
        run_id: int | None = None,
        event: str = "push",
        head_repository: str | None = None,
    ) -> dict[str, Any]:
        """Queue a job (in a new run, or in ``run_id``) and return it as the API shows it."""
        with self.lock:
            now = self.clock()
            if run_id is None:
                run = LocalRun(next(self._run_ids), repository, event,
                               head_repository or repository, now)
                self.runs[run.id] = run
            else:
                run = self.runs[run_id]
            job_id = next(self._job_ids)
            self.jobs[job_id] = {
                "id": job_id, "run_id": run.id, "name": name, "status": "queued",
                "conclusion": None, "labels": list(labels), "created_at": now,
                "started_at": now, "completed_at": None, "runner_id": None, "runner_name": None,
                "runner_group_id": None, "runner_group_name": None,
            }
            run.jobs.append(job_id)
            self._tell(job_id, "queued")
            return self.job_json(job_id)

    def start_job(self, job_id: int, runner_id: int) -> None:
        """A runner took the job: the job is ``in_progress`` on it, the runner busy."""
        with self.lock:
            job = self.jobs[job_id]
            runner = self._runner(runner_id)
            job.update(status="in_progress", runner_id=runner_id, runner_name=runner["name"],
                       runner_group_id=1, runner_group_name="Default",
                       started_at=self.clock())
            runner.update(status="online", busy=True)
            self._tell(job_id, "in_progress")

    def complete_job(self, job_id: int, conclusion: str = "success") -> None:
        """The job ended; its ephemeral runner is deregistered, as GitHub does."""
        with self.lock:
            job = self.jobs[job_id]
            job.update(status="completed", conclusion=conclusion, completed_at=self.clock())
            if job["runner_id"] is not None:
                for runners in self.runners.values():
                    runners.pop(job["runner_id"], None)
            self._tell(job_id, "completed")

    def _tell(self, job_id: int, action: str) -> None:
        for listener in list(self.listeners):
            listener(job_id, action)

    def force_limit(self, limit: ForcedLimit, count: int = 1) -> None:
        """The next ``count`` API calls are refused by ``limit``."""
        with self.lock:
            self.forced.extend([limit] * count)

    def all_runners(self) -> list[dict[str, Any]]:
        """Every registered runner, with its ``scope`` (``repo:owner/name`` or ``org:login``)."""
        with self.lock:
            return [{"scope": f"{kind}:{name}", **runner}
                    for (kind, name), runners in self.runners.items()
                    for runner in runners.values()]

    # -- what the HTTP side calls ---------------------------------------------------------------

    def issue_token(self, installation_id: int) -> dict[str, Any]:
        """A new installation token, as ``POST .../access_tokens`` answers it."""
        with self.lock:
            if installation_id not in self.installations:
                raise Problem(404, "Not Found")
            token = "ghs_" + secrets.token_urlsafe(27)[:36]
            expires_at = self.clock() + self.token_ttl_s
            self.tokens[token] = (installation_id, expires_at)
            return {"token": token, "expires_at": iso(expires_at),
                    "permissions": {"administration": "write", "actions": "read",
                                    "organization_self_hosted_runners": "write"},
                    "repository_selection": "all"}

    def credential(self, token: str) -> str:
        """Which budget a bearer token spends (``installation:ID`` or ``token:N``); 401 if bad."""
        with self.lock:
            if token in self.static_tokens:
                return f"token:{sorted(self.static_tokens).index(token)}"
            found = self.tokens.get(token)
            if found is None or found[1] <= self.clock():
                raise Problem(401, "Bad credentials")
            return f"installation:{found[0]}"

    def spend(self, credential: str) -> dict[str, str]:
        """Count one call against ``credential``: its rate-limit headers, or the refusal."""
        with self.lock:
            now = self.clock()
            budget = self._budgets.get(credential)
            if budget is None or budget.reset_at <= now:
                budget = _Budget(self.rate_limit, self.rate_limit, now + 3600)
                self._budgets[credential] = budget
            if self.forced:
                self._refuse(self.forced.popleft(), budget, credential, now)
            if budget.remaining <= 0:
                raise Problem(403, f"API rate limit exceeded for {credential}.",
                              self._headers(budget))
            budget.remaining -= 1
            return self._headers(budget)

    def _refuse(self, limit: ForcedLimit, budget: _Budget, credential: str, now: float) -> None:
        if limit.kind == "primary":
            budget.remaining, budget.reset_at = 0, now + limit.reset_in
            message = f"API rate limit exceeded for {credential}."
        else:
            message = SECONDARY_MESSAGE
        headers = self._headers(budget)
        if limit.retry_after is not None:
            headers["retry-after"] = str(limit.retry_after)
        raise Problem(limit.status, message, headers)

    def _headers(self, budget: _Budget) -> dict[str, str]:
        return {"x-ratelimit-limit": str(budget.limit),
                "x-ratelimit-remaining": str(budget.remaining),
                "x-ratelimit-used": str(budget.limit - budget.remaining),
                "x-ratelimit-reset": str(int(budget.reset_at)), "x-ratelimit-resource": "core"}

    def register_runner(
        self, scope: tuple[str, str], name: str, labels: list[str]
    ) -> dict[str, Any]:
        """``generate-jitconfig``: a new offline runner and its encoded JIT config."""
        with self.lock:
            runners = self.runners.setdefault(scope, {})
            if any(r["name"] == name for r in runners.values()):
                raise Problem(409, f"Already exists - A runner with the name {name} already "
                                   "exists.")
            runner_id = next(self._runner_ids)
            runner = {"id": runner_id, "name": name, "os": "unknown", "status": "offline",
                      "busy": False, "labels": [self._label(label) for label in labels]}
            runners[runner_id] = runner
            token = secrets.token_urlsafe(24)
            self.runner_tokens[token] = runner_id
            credentials = {".runner": {"AgentId": runner_id, "AgentName": name,
                                       "ServerUrl": self.server_url, "Ephemeral": True},
                           ".credentials": {"Scheme": "OAuthAccessToken",
                                            "Data": {"token": token}}}
            encoded = base64.b64encode(json.dumps(credentials).encode()).decode()
            self.jit_configs[runner_id] = encoded
            return {"runner": dict(runner), "encoded_jit_config": encoded}

    def _label(self, name: str) -> dict[str, Any]:
        kind = "read-only" if name.lower() in DEFAULT_LABELS else "custom"
        return {"id": next(self._label_ids), "name": name, "type": kind}

    def remove_runner(self, scope: tuple[str, str], runner_id: int) -> None:
        """``DELETE .../runners/{id}``: 404 if unknown, 422 while it runs a job."""
        with self.lock:
            runner = self.runners.get(scope, {}).get(runner_id)
            if runner is None:
                raise Problem(404, "Not Found")
            if runner["busy"]:
                raise Problem(422, f'Bad request - Runner "{runner["name"]}" is still running '
                                   "a job")
            del self.runners[scope][runner_id]

    def list_runners(self, scope: tuple[str, str]) -> list[dict[str, Any]]:
        """The runners of a scope, oldest first."""
        with self.lock:
            return [dict(r) for r in self.runners.get(scope, {}).values()]

    def list_runs(self, repository: str, status: str | None) -> list[dict[str, Any]]:
        """The runs of a repository (newest first, as GitHub lists them), by status."""
        with self.lock:
            runs = [self.run_json(r.id) for r in self.runs.values()
                    if r.repository.lower() == repository.lower()]
            return [r for r in reversed(runs) if status is None or r["status"] == status]

    def list_jobs(self, repository: str, run_id: int) -> list[dict[str, Any]]:
        """The jobs of a run: 404 if the run is not in the repository."""
        with self.lock:
            run = self.runs.get(run_id)
            if run is None or run.repository.lower() != repository.lower():
                raise Problem(404, "Not Found")
            return [self.job_json(job_id) for job_id in run.jobs]

    def get_job(self, repository: str, job_id: int) -> dict[str, Any]:
        """``GET .../actions/jobs/{job_id}``: 404 if the job is not in the repository."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or self.runs[job["run_id"]].repository.lower() != repository.lower():
                raise Problem(404, "Not Found")
            return self.job_json(job_id)

    def known_repositories(self) -> list[str]:
        """The repositories the stand-in knows: those of the runs queued on it, and those given
        to an installation (sorted, GitHub's spelling as first seen)."""
        with self.lock:
            names = [r.repository for r in self.runs.values()]
            names += [n for given in self.installation_repositories.values() for n in given]
            return sorted({n.lower(): n for n in reversed(names)}.values())

    def list_installation_repositories(self, credential: str) -> tuple[str, list[dict[str, Any]]]:
        """``GET /installation/repositories``: the selection (``all`` or ``selected``) and the
        repositories of the installation whose token is ``credential``; 403 for another token."""
        kind, _, installation = credential.partition(":")
        if kind != "installation":
            raise Problem(403, "You must authenticate with an installation access token in order "
                               "to list repositories for an installation.")
        with self.lock:
            given = self.installation_repositories.get(int(installation))
            names = self.known_repositories() if given is None else given
            return ("all" if given is None else "selected",
                    [self._repository(n) for n in names])

    def list_org_repositories(self, org: str) -> list[dict[str, Any]]:
        """``GET /orgs/{org}/repos``: the known repositories ``org`` owns (none for an unknown
        organization: the stand-in knows organizations only by their repositories)."""
        with self.lock:
            return [self._repository(n) for n in self.known_repositories()
                    if n.partition("/")[0].lower() == org.lower()]

    # -- helpers ---------------------------------------------------------------------------------

    def _runner(self, runner_id: int) -> dict[str, Any]:
        for runners in self.runners.values():
            if runner_id in runners:
                return runners[runner_id]
        raise KeyError(runner_id)
