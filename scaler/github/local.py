"""The state behind the local GitHub stand-in: installations, tokens, workflow runs and jobs,
runners registered just in time, rate limits; and the shapes GitHub gives them.

:class:`LocalGitHub` is plain Python under one lock: the HTTP side
(:mod:`scaler.github.local_server`) calls it from the server's thread, tests and ``scaler dev``
call it from theirs (queue a job, see the runners, force a rate limit). Jobs, runs and runners are
serialised in the shapes of GitHub's documented examples (:func:`LocalGitHub.job_json`,
:meth:`LocalGitHub.webhook_payload`), ids of jobs and runs above 2^32 as on github.com.

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
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["DEFAULT_LABELS", "ForcedLimit", "LocalGitHub", "Problem", "iso"]

DEFAULT_LABELS = frozenset({"self-hosted", "linux", "x64", "arm64", "macos", "windows"})
"""Labels GitHub marks ``read-only`` on a self-hosted runner (compared case-insensitively)."""
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes before "
                     "you try again.")
DOCS = "https://docs.github.com/rest"


def iso(epoch: float) -> str:
    """Epoch seconds as GitHub writes a time: ``2021-09-13T02:21:13Z``."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


@dataclass
class _Run:
    id: int
    repository: str
    event: str
    head_repository: str
    created_at: float
    jobs: list[int] = field(default_factory=list)


class LocalGitHub:
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
    ) -> None:
        self.app_id = app_id
        self.installations = frozenset(installations)
        self.static_tokens = frozenset(static_tokens)
        self.token_ttl_s = token_ttl_s
        self.rate_limit = rate_limit
        self.clock = clock
        self.lock = threading.RLock()
        self.tokens: dict[str, tuple[int, float]] = {}  # token -> (installation, expires_at)
        self.runs: dict[int, _Run] = {}
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
                run = _Run(next(self._run_ids), repository, event, head_repository or repository,
                           now)
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

    # -- shapes ---------------------------------------------------------------------------------

    def _runner(self, runner_id: int) -> dict[str, Any]:
        for runners in self.runners.values():
            if runner_id in runners:
                return runners[runner_id]
        raise KeyError(runner_id)

    def _run_status(self, run: _Run) -> str:
        statuses = {self.jobs[j]["status"] for j in run.jobs}
        if statuses == {"completed"}:
            return "completed"
        return "queued" if statuses <= {"queued"} else "in_progress"

    def job_json(self, job_id: int) -> dict[str, Any]:
        """A job in the shape of the REST API's job and the webhook's ``workflow_job``."""
        with self.lock:
            job = self.jobs[job_id]
            run = self.runs[job["run_id"]]
            api = f"https://api.github.com/repos/{run.repository}"
            web = f"https://github.com/{run.repository}"
            return {
                "id": job_id, "run_id": run.id, "run_url": f"{api}/actions/runs/{run.id}",
                "run_attempt": 1, "node_id": f"CR_local{job_id}",
                "head_sha": f"{run.id:040x}"[-40:], "head_branch": "main",
                "url": f"{api}/actions/jobs/{job_id}",
                "html_url": f"{web}/actions/runs/{run.id}/job/{job_id}",
                "status": job["status"], "conclusion": job["conclusion"],
                "started_at": iso(job["started_at"]), "created_at": iso(job["created_at"]),
                "completed_at": iso(job["completed_at"]) if job["completed_at"] else None,
                "name": job["name"], "steps": [], "check_run_url": f"{api}/check-runs/{job_id}",
                "labels": list(job["labels"]), "runner_id": job["runner_id"],
                "runner_name": job["runner_name"], "runner_group_id": job["runner_group_id"],
                "runner_group_name": job["runner_group_name"], "workflow_name": "CI",
            }

    def run_json(self, run_id: int) -> dict[str, Any]:
        """A workflow run in the REST API's shape (the fields a runner service reads, and more)."""
        with self.lock:
            run = self.runs[run_id]
            api = f"https://api.github.com/repos/{run.repository}"
            return {
                "id": run.id, "name": "CI", "node_id": f"WFR_local{run.id}", "head_branch": "main",
                "head_sha": f"{run.id:040x}"[-40:], "path": ".github/workflows/ci.yml",
                "run_number": run.id % 10_000, "event": run.event,
                "status": self._run_status(run), "conclusion": None, "workflow_id": 1,
                "url": f"{api}/actions/runs/{run.id}",
                "html_url": f"https://github.com/{run.repository}/actions/runs/{run.id}",
                "created_at": iso(run.created_at), "updated_at": iso(self.clock()),
                "run_attempt": 1, "repository": self._repository(run.repository),
                "head_repository": self._repository(run.head_repository),
            }

    def webhook_payload(
        self, job_id: int, action: str, installation_id: int | None = None, fork: bool = False
    ) -> dict[str, Any]:
        """The ``workflow_job`` delivery GitHub would send now for ``job_id``."""
        with self.lock:
            run = self.runs[self.jobs[job_id]["run_id"]]
            repository = self._repository(run.repository)
            repository["fork"] = fork
            payload: dict[str, Any] = {"action": action, "workflow_job": self.job_json(job_id),
                                       "repository": repository,
                                       "sender": {"login": "octocat", "id": 1, "type": "User"}}
            installation = installation_id or min(self.installations, default=None)
            if installation is not None:
                payload["installation"] = {"id": installation, "node_id": f"I_{installation}"}
            return payload

    def _repository(self, full_name: str) -> dict[str, Any]:
        owner, name = full_name.split("/", 1)
        return {
            "id": zlib.crc32(full_name.encode()), "node_id": f"R_{name}", "name": name,
            "full_name": full_name, "private": False,
            "owner": {"login": owner, "id": zlib.crc32(owner.encode()) % 10**8,
                      "node_id": f"O_{owner}", "type": "Organization", "site_admin": False},
            "html_url": f"https://github.com/{full_name}", "description": None, "fork": False,
            "url": f"https://api.github.com/repos/{full_name}", "default_branch": "main",
        }
