"""The shapes the local GitHub stand-in gives its jobs, runs, repositories and webhooks: those of
GitHub's documented examples (:class:`GitHubShapes`, a base of
:class:`~scaler.github.local.LocalGitHub`), ids of jobs and runs above 2^32 as on github.com."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["GitHubShapes", "LocalRun", "iso"]


def iso(epoch: float) -> str:
    """Epoch seconds as GitHub writes a time: ``2021-09-13T02:21:13Z``."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LocalRun:
    """A workflow run on the stand-in: its repository, what started it, its jobs' ids."""

    id: int
    repository: str
    event: str
    head_repository: str
    created_at: float
    jobs: list[int] = field(default_factory=list)


class GitHubShapes:
    """The serialisation half of :class:`~scaler.github.local.LocalGitHub` (its state)."""

    lock: threading.RLock
    clock: Callable[[], float]
    installations: frozenset[int]
    runs: dict[int, LocalRun]
    jobs: dict[int, dict[str, Any]]

    def _run_status(self, run: LocalRun) -> str:
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
            "archived": False, "disabled": False,
        }
