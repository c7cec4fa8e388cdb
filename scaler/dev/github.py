"""``scaler dev --github``: GitHub Actions runners end to end on this machine, and the proof.

Started (and stopped in reverse, whatever happens): Redis, the local Machines API (process
runtime, Fly's rate limits), the local GitHub stand-in (:mod:`scaler.github.local_server`) with a
throwaway App key, and the scaler with one github pool (:mod:`scaler.dev.github_config`) whose
machines run the stand-in runner. The stand-in then queues N workflow jobs and delivers their
signed ``workflow_job`` webhooks to the scaler's ``POST /v1/webhooks/github``, exactly as GitHub
would: it loses the ``queued`` webhook of the last job (only the scaler's resync can find it),
redelivers another one (which must launch nothing), gives each job to whichever idle runner
serves its labels, and reports ``in_progress`` and ``completed``.

The run passes (exit 0) when, with nothing cleaned up on the scaler's behalf: every job
completed; every job ran on a runner machine of the pool and each machine ran exactly one job
(as many machines as jobs); the lost webhook's job was queued by the resync; every runner
machine's env held its JIT config and no other secret (the Fly token, the webhook secret, the App
key, the installation tokens); and nothing is left: no machine alive, no runner registered on the
stand-in, no message waiting or claimed in the pool's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from scaler.dev.config import DevIds
from scaler.dev.github_config import (
    INSTALLATION_ID,
    JOB_LABELS,
    REPOSITORY,
    RUNNERS_APP,
    RUNNERS_POOL,
    RUNNERS_QUEUE,
    github_dev_settings,
)
from scaler.dev.tracker import MachineTracker
from scaler.github.launcher import JITCONFIG_ENV
from scaler.secret import Secret

if TYPE_CHECKING:
    from scaler.config import Settings
    from scaler.dev.redis import RedisChoice
    from scaler.dev.session import DevSession
    from scaler.github.local_server import LocalGitHubServer
    from scaler.local.server import LocalAPIServer
    from scaler.loop.service import Service

__all__ = ["GitHubProof", "GitHubRun", "run_github_dev"]

_SAMPLE_S = 0.25
WEBHOOK_PATH = "/v1/webhooks/github"


@dataclass
class GitHubProof:
    """What a ``scaler dev --github`` run found; :attr:`problems` is empty when it passed."""

    jobs: int
    completed: int = 0
    machines: int = 0
    one_job_each: bool = False
    resynced: int = 0
    duplicates: int = 0
    env_problems: list[str] = field(default_factory=list)
    machines_left: int = 0
    runners_left: int = 0
    queue_left: int = 0
    wall_time_s: float = 0.0
    started_p50_s: float | None = None
    problem: str | None = None

    @property
    def problems(self) -> list[str]:
        """What failed, one line each."""
        out = [self.problem] if self.problem else []
        if self.completed != self.jobs:
            out.append(f"{self.completed}/{self.jobs} jobs completed")
        if self.machines != self.jobs or not self.one_job_each:
            out.append(f"{self.machines} runner machines for {self.jobs} jobs: each job needs "
                       "exactly one machine, and each machine one job")
        if self.jobs and self.resynced < 1:
            out.append("the job whose webhook was lost was not queued by a resync")
        out.extend(self.env_problems)
        if self.machines_left:
            out.append(f"{self.machines_left} machine(s) left by the scaler")
        if self.runners_left:
            out.append(f"{self.runners_left} runner(s) still registered on GitHub")
        if self.queue_left:
            out.append(f"{self.queue_left} message(s) still waiting or claimed in the queue")
        return out

    def format(self) -> str:
        """The summary printed at the end."""
        p50 = "-" if self.started_p50_s is None else f"{self.started_p50_s:.1f}s"
        lines = [
            f"github: {self.completed}/{self.jobs} jobs completed in {self.wall_time_s:.1f}s "
            f"(queued to started p50 {p50})",
            f"github: {self.machines} runner machines, "
            f"{'one job each' if self.one_job_each else 'NOT one job each'}; "
            f"{self.resynced} job(s) found by resync after a lost webhook; "
            f"{self.duplicates} redelivery(ies) ignored",
            f"github: left: {self.machines_left} machines, {self.runners_left} registered "
            f"runners, {self.queue_left} queued or claimed messages",
        ]
        problems = self.problems
        lines.append("github: PASS" if not problems else "github: FAIL: " + "; ".join(problems))
        return "\n".join(lines)


def _counter(service: Service, name: str, **labels: str) -> int:
    total = 0.0
    for metric in service.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return int(total)


class GitHubRun:
    """One ``scaler dev --github`` run against servers already started (see :meth:`prepare`)."""

    def __init__(self, *, jobs: int, timeout: float, run_time_s: float, out: TextIO,
                 api: LocalAPIServer, github: LocalGitHubServer, settings: Settings,
                 secrets: Mapping[str, Secret], lost: int | None = None) -> None:
        self.jobs = jobs
        self.lost = jobs - 1 if lost is None else lost  # the job whose queued webhook is lost
        self.timeout = timeout
        self.run_time_s = run_time_s
        self.out = out
        self.api = api
        self.github = github
        self.settings = settings
        self.secrets = secrets
        self.tracker = MachineTracker()
        self.job_ids: list[int] = []
        self.envs: dict[str, dict[str, str]] = {}  # machine name -> its env as created

    @staticmethod
    def prepare(api: LocalAPIServer, github: LocalGitHubServer, *, redis_url: str, ids: DevIds,
                private_key: Secret, run_time_s: float) -> tuple[Settings, dict[str, Secret]]:
        """Create the runner app and the settings; the secrets that must reach no machine."""
        with api.client(timeout=30) as http:
            http.post("/v1/apps", json={"name": RUNNERS_APP, "org_slug": "personal"}
                      ).raise_for_status()
        webhook_secret = Secret(secrets.token_urlsafe(24))
        settings = github_dev_settings(api_url=api.url, token=api.token, redis_url=redis_url,
                                       ids=ids, github_url=github.url, private_key=private_key,
                                       webhook_secret=webhook_secret, run_time_s=run_time_s)
        held = {"the Fly token": Secret(api.token), "the webhook secret": webhook_secret,
                "the App key": private_key}
        return settings, held

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self, stop: asyncio.Event) -> GitHubProof:
        """Run the jobs through the scaler and check the outcome."""
        from scaler.loop.service import Service

        proof = GitHubProof(self.jobs)
        started = time.monotonic()
        service = Service(self.settings, http=True, http_port=0)
        service_stop = asyncio.Event()
        task = asyncio.create_task(service.run(service_stop), name="scaler")
        try:
            proof.problem = await self._drive(service, task, stop, started)
        finally:
            service_stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=40)
        proof.wall_time_s = time.monotonic() - started
        self._check(service, proof)
        await self._destroy_leftovers()
        return proof

    async def _drive(self, service: Service, task: asyncio.Task[None], stop: asyncio.Event,
                     started: float) -> str | None:
        hooks = self.github.hooks
        while service.http_port is None:  # the service binds its port as it starts
            if task.done():
                return f"the scaler stopped before it listened: {task.exception()!r}"
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{service.http_port}{WEBHOOK_PATH}"
        hooks.configure(url, self.secrets["the webhook secret"])
        self._say(f"scaler dev: GitHub stand-in {self.github.url}; webhooks to {url}")
        hooks.ping()
        for i in range(self.jobs):
            if i == self.lost:
                # By default the last job's webhook is lost: no other delivery tells the scaler
                # of it, and the runners launched for the others are taken by older jobs, so
                # only the resync can give it a runner.
                hooks.drop(1, action="queued")
            job = self.github.state.queue_job(REPOSITORY, JOB_LABELS, name=f"build-{i + 1}")
            self.job_ids.append(int(job["id"]))
        if self.jobs > 1:
            await asyncio.to_thread(hooks.wait_idle, 10.0)
            sent = [d for d in hooks.deliveries if d.action == "queued" and not d.dropped]
            if sent:
                hooks.redeliver(sent[0].guid)  # GitHub's "Redeliver": must launch nothing new
        deadline = started + self.timeout
        last_line = 0.0
        while not stop.is_set():
            if task.done():
                return f"the scaler stopped: {task.exception()!r}"
            self._sample()
            waiting = self._waiting_for(service)
            if not waiting:
                return None
            now = time.monotonic()
            if now > deadline:
                return f"timed out after {self.timeout:g}s waiting for {waiting}"
            if now - last_line >= 1.0:
                last_line = now
                self._say(f"scaler dev: {now - started:5.1f}s  waiting for {waiting}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=_SAMPLE_S)
        return "interrupted"

    def _sample(self) -> None:
        records = self.api.state.machines(RUNNERS_APP)
        self.tracker.observe(records)
        for r in records:
            if r.name not in self.envs:
                self.envs[r.name] = {str(k): str(v)
                                     for k, v in (r.config.get("env") or {}).items()}

    def _queue_left(self, service: Service) -> int:
        last = service.reconciler.last
        row = last.observation.queues.get(RUNNERS_QUEUE) if last is not None else None
        if row is None:
            return -1
        return row.ready + row.in_flight + row.delayed + row.claimed

    def _waiting_for(self, service: Service) -> str:
        jobs = self.github.state.jobs
        done = sum(1 for j in self.job_ids if jobs[j]["status"] == "completed")
        if done < self.jobs:
            return f"jobs to complete ({done}/{self.jobs})"
        if self.tracker.not_final():
            return f"{len(self.tracker.not_final())} runner machine(s) to end"
        if self.github.state.all_runners():
            return f"{len(self.github.state.all_runners())} runner(s) to be deregistered"
        left = self._queue_left(service)
        if left:
            return "the queue to empty" if left > 0 else "the scaler's first observation"
        return ""

    def _check(self, service: Service, proof: GitHubProof) -> None:
        self._sample()
        jobs = self.github.state.jobs
        ran = [jobs[j] for j in self.job_ids]
        proof.completed = sum(1 for j in ran if j["status"] == "completed"
                              and j["conclusion"] == "success")
        names = [j["runner_name"] for j in ran]
        machines = {m.id: m for m in self.tracker.seen.values() if m.pool == RUNNERS_POOL}
        proof.machines = len(machines)
        proof.one_job_each = (None not in names and len(set(names)) == len(names)
                              and set(names) == set(self.envs))
        proof.resynced = _counter(service, "fly_scaler_github_jobs_queued_total",
                                  pool=RUNNERS_POOL, source="resync")
        proof.duplicates = _counter(service, "fly_scaler_github_webhook_deliveries_total",
                                    result="duplicate")
        proof.machines_left = len(self.tracker.remaining())
        proof.runners_left = len(self.github.state.all_runners())
        proof.queue_left = max(0, self._queue_left(service))
        proof.env_problems = self._env_problems()
        waits = sorted(j["started_at"] - j["created_at"] for j in ran
                       if j["status"] != "queued" and j["runner_id"] is not None)
        proof.started_p50_s = waits[len(waits) // 2] if waits else None

    def _env_problems(self) -> list[str]:
        held = dict(self.secrets)
        with self.github.state.lock:
            for i, token in enumerate(self.github.state.tokens):
                held[f"installation token {i + 1}"] = Secret(token)
        pem_lines = [line for line in held["the App key"].get_secret_value().splitlines()
                     if len(line) >= 16 and not line.startswith("-----")]
        out = []
        for name, env in sorted(self.envs.items()):
            if not env.get(JITCONFIG_ENV):
                out.append(f"machine {name} got no {JITCONFIG_ENV}")
            others = " ".join(v for k, v in env.items() if k != JITCONFIG_ENV)
            for what, secret in held.items():
                if secret.get_secret_value() in others:
                    out.append(f"machine {name}'s env holds {what}")
            if any(line in others for line in pem_lines):
                out.append(f"machine {name}'s env holds part of the App key")
        configs = [env.get(JITCONFIG_ENV) for env in self.envs.values()]
        if len(set(configs)) != len(configs):
            out.append("a JIT config reached more than one machine")
        return out

    async def _destroy_leftovers(self) -> None:
        """Destroy what the scaler left (already counted as a failure) so nothing outlives us."""
        targets = self.tracker.remaining()
        if not targets:
            return
        async with self.api.async_client(timeout=10) as http:
            for m in targets:
                with contextlib.suppress(Exception):
                    await http.delete(f"/v1/apps/{m.app}/machines/{m.id}",
                                      params={"force": "true"})


def run_github_dev(session: DevSession, choice: RedisChoice, workdir: Path) -> int:
    """``scaler dev --github`` with Redis chosen: start the servers, run, print the proof; the
    exit code (0 passed, 1 failed, 130 interrupted)."""
    from scaler.github.local_server import LocalGitHubServer
    from scaler.github.testing import make_app_key
    from scaler.local.server import LocalAPIServer
    from scaler.telemetry.logging import configure_logging

    opts = session.options
    log_path = workdir / "scaler.log"
    proof: GitHubProof | None = None
    with log_path.open("a") as log_file:
        configure_logging(json=True, level="info", stream=log_file)
        session.say(f"scaler dev --github: namespace {session.ids.namespace}; redis "
                    f"{choice.description}; logs {log_path}")
        api = LocalAPIServer(runtime="process", timings=opts.timings, rate_limits="fly",
                             workdir=workdir / "machines")
        try:
            key = make_app_key()
            with LocalGitHubServer(key.public, app_id="1",
                                   installations=(INSTALLATION_ID,)) as github:
                settings, secrets = GitHubRun.prepare(
                    api, github, redis_url=choice.url, ids=session.ids,
                    private_key=key.private_pem, run_time_s=opts.run_time)
                run = GitHubRun(jobs=opts.jobs or 0, timeout=opts.timeout,
                                run_time_s=opts.run_time, out=session.out, api=api,
                                github=github, settings=settings, secrets=secrets)

                async def main() -> GitHubProof:
                    return await run.run(session.attach())

                if not session.signals:
                    proof = asyncio.run(main())
        finally:
            api.close()
            configure_logging(json=False, level="warning", stream=session.err)
    if proof is None:
        return 130
    session.say(proof.format())
    if proof.problems:
        return 130 if session.signals and proof.problem == "interrupted" else 1
    return 0
