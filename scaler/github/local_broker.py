"""The local GitHub stand-in's runner side: registered runners ask for work, and a queued job goes
to *any* idle runner whose labels match, as on GitHub.

A JIT config (:meth:`~scaler.github.local.LocalGitHub.register_runner`) carries the stand-in's URL
and a runner credential. The runner (:mod:`scaler.github.local_runner`) uses it to open a session
(the runner is ``online``), then polls for a job. :class:`RunnerBroker` hands the oldest queued job
to the runner that has waited longest among the idle online runners serving all of the job's
labels: *not* necessarily the runner the scaler launched for that job. A job assigned but not
started within ``pickup_timeout_s`` (60 s, GitHub's figure) on the stand-in's clock goes back to
the queue, and that runner counts as offline until it polls again. ``started`` and ``completed``
reports become ``in_progress`` and ``completed`` job changes (and so webhooks); an ephemeral
runner is deregistered when its job completes.

Routes, authenticated with the runner credential (``Authorization: Bearer``): ``POST
/_runner/session``, ``GET /_runner/job?wait=S`` (200 with the job, or 204), ``POST
/_runner/jobs/{id}/started``, ``POST /_runner/jobs/{id}/completed`` (``{"conclusion"}``). An unknown
or deregistered runner gets 401, as a real runner whose registration was removed does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from scaler.github.local import LocalGitHub, Problem

__all__ = ["PICKUP_TIMEOUT_S", "RunnerBroker", "broker_routes"]

PICKUP_TIMEOUT_S = 60.0
CONCLUSIONS = frozenset({"success", "failure", "cancelled", "skipped", "timed_out"})
_POLL_STEP_S = 0.05


@dataclass
class _Assignment:
    runner_id: int
    at: float


class RunnerBroker:
    """Assigns ``state``'s queued jobs to its registered runners (all under ``state.lock``)."""

    def __init__(self, state: LocalGitHub, pickup_timeout_s: float = PICKUP_TIMEOUT_S) -> None:
        self.state = state
        self.pickup_timeout_s = pickup_timeout_s
        self.assigned: dict[int, _Assignment] = {}  # job id -> the runner it was given to
        self.waiting: dict[int, float] = {}  # idle online runner id -> since when it waits
        self.history: list[tuple[int, int]] = []  # (job id, runner id) of every assignment
        self.requeued: list[tuple[int, int]] = []  # (job id, runner id) that did not pick up

    def runner_of(self, token: str) -> int:
        """The registered runner a credential belongs to (401 if unknown or deregistered)."""
        with self.state.lock:
            runner_id = self.state.runner_tokens.get(token)
            if runner_id is None or self._runner(runner_id) is None:
                raise Problem(401, "Bad credentials: the runner is not registered")
            return runner_id

    def connect(self, runner_id: int) -> dict[str, Any]:
        """A runner opened a session: online, waiting for a job."""
        with self.state.lock:
            runner = self._runner(runner_id)
            assert runner is not None
            runner["status"] = "online"
            self.waiting.setdefault(runner_id, self.state.clock())
            self.assign()
            return dict(runner)

    def poll(self, runner_id: int) -> dict[str, Any] | None:
        """The job given to ``runner_id``, if any (the runner is online and idle meanwhile)."""
        with self.state.lock:
            self.sweep()
            runner = self._runner(runner_id)
            if runner is None:
                raise Problem(401, "Bad credentials: the runner is not registered")
            job_id = next((j for j, a in self.assigned.items() if a.runner_id == runner_id), None)
            if job_id is None and not runner["busy"]:
                runner["status"] = "online"
                self.waiting.setdefault(runner_id, self.state.clock())
                self.assign()
                job_id = next((j for j, a in self.assigned.items() if a.runner_id == runner_id),
                              None)
            return None if job_id is None else self.state.job_json(job_id)

    def started(self, runner_id: int, job_id: int) -> None:
        """The runner started the job it was given: the job is ``in_progress`` on it."""
        with self.state.lock:
            got = self.assigned.get(job_id)
            if got is None or got.runner_id != runner_id:
                raise Problem(409, f"job {job_id} is not assigned to runner {runner_id}")
            del self.assigned[job_id]
            self.state.start_job(job_id, runner_id)

    def completed(self, runner_id: int, job_id: int, conclusion: str) -> None:
        """The runner finished the job: ``completed``, and the ephemeral runner deregistered."""
        if conclusion not in CONCLUSIONS:
            raise Problem(422, f"conclusion must be one of {sorted(CONCLUSIONS)}")
        with self.state.lock:
            job = self.state.jobs.get(job_id)
            if job is None or job["runner_id"] != runner_id or job["status"] != "in_progress":
                raise Problem(409, f"job {job_id} is not in progress on runner {runner_id}")
            self.state.complete_job(job_id, conclusion)
            self.waiting.pop(runner_id, None)

    def cancel(self, job_id: int) -> None:
        """Cancel a job: a queued one completes as ``cancelled`` at once; one in progress
        completes as ``cancelled`` and its runner is deregistered, as GitHub does."""
        with self.state.lock:
            job = self.state.jobs[job_id]
            if job["status"] == "completed":
                return
            self.assigned.pop(job_id, None)
            self.state.complete_job(job_id, "cancelled")

    def sweep(self) -> None:
        """Re-queue jobs not started within the pick-up timeout; forget runners that are gone."""
        with self.state.lock:
            now = self.state.clock()
            for job_id, got in list(self.assigned.items()):
                if now - got.at >= self.pickup_timeout_s:
                    del self.assigned[job_id]
                    self.requeued.append((job_id, got.runner_id))
                    self.waiting.pop(got.runner_id, None)
                    runner = self._runner(got.runner_id)
                    if runner is not None:
                        runner["status"] = "offline"
            for runner_id in [r for r in self.waiting if self._runner(r) is None]:
                del self.waiting[runner_id]
            self.assign()

    def assign(self) -> None:
        """Give each queued, unassigned job (oldest first) to the longest-waiting idle runner
        serving all of its labels."""
        with self.state.lock:
            now = self.state.clock()
            for job_id, job in sorted(self.state.jobs.items(), key=lambda kv: kv[1]["created_at"]):
                if job["status"] != "queued" or job_id in self.assigned:
                    continue
                wanted = {label.lower() for label in job["labels"]}
                busy = {a.runner_id for a in self.assigned.values()}
                for runner_id, _since in sorted(self.waiting.items(), key=lambda kv: kv[1]):
                    runner = self._runner(runner_id)
                    if runner is None or runner["busy"] or runner_id in busy:
                        continue
                    if wanted <= {label["name"].lower() for label in runner["labels"]}:
                        self.assigned[job_id] = _Assignment(runner_id, now)
                        self.history.append((job_id, runner_id))
                        del self.waiting[runner_id]
                        break

    def _runner(self, runner_id: int) -> dict[str, Any] | None:
        for runners in self.state.runners.values():
            if runner_id in runners:
                return runners[runner_id]
        return None


def broker_routes(broker: RunnerBroker) -> list[BaseRoute]:
    """The runner-facing routes of the stand-in."""

    def runner(request: Request) -> int:
        kind, _, token = request.headers.get("authorization", "").partition(" ")
        if kind.lower() != "bearer" or not token:
            raise Problem(401, "Requires authentication")
        return broker.runner_of(token.strip())

    def answer(exc: Problem) -> JSONResponse:
        return JSONResponse({"message": exc.message}, exc.status)

    async def session(request: Request) -> Response:
        try:
            return JSONResponse(broker.connect(runner(request)))
        except Problem as exc:
            return answer(exc)

    async def job(request: Request) -> Response:
        try:
            runner_id = runner(request)
            wait = min(30.0, max(0.0, float(request.query_params.get("wait", "0"))))
        except ValueError:
            return answer(Problem(422, "wait must be a number of seconds"))
        except Problem as exc:
            return answer(exc)
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            try:
                found = broker.poll(runner_id)
            except Problem as exc:
                return answer(exc)
            if found is not None:
                return JSONResponse(found)
            if loop.time() >= until:
                return Response(status_code=204)
            await asyncio.sleep(_POLL_STEP_S)  # a long poll, as the runner's broker answers

    async def report(request: Request) -> Response:
        try:
            runner_id = runner(request)
            job_id = int(request.path_params["job_id"])
            if request.path_params["what"] == "started":
                broker.started(runner_id, job_id)
            elif request.path_params["what"] == "completed":
                body = await request.json()
                broker.completed(runner_id, job_id, str(body.get("conclusion", "")))
            else:
                raise Problem(404, "Not Found")
        except Problem as exc:
            return answer(exc)
        return Response(status_code=204)

    return [
        Route("/_runner/session", session, methods=["POST"]),
        Route("/_runner/job", job, methods=["GET"]),
        Route("/_runner/jobs/{job_id:int}/{what}", report, methods=["POST"]),
    ]
