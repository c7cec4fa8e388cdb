"""Per-job traffic for the sim runtime: enqueue messages as an app would, and play the runner's
part for sim machines (mark the claim running and ack it), so jobs finish and sim machines exit and
auto-destroy instead of piling up."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from scaler.jobs.claims import RunnerClaim
from scaler.jobs.slots import read_binding
from scaler.local.server import LocalAPIServer
from scaler.loop.machines import META_JOB
from workers.enqueue import ScalerMiddleware

__all__ = ["Enqueuer", "SimJobs", "create_times"]


class Enqueuer:
    """Sends messages the way an app does (dramatiq RedisBroker + the scaler middleware)."""

    def __init__(self, redis_url: str, namespace: str, prefix: str) -> None:
        self.broker = RedisBroker(url=redis_url, namespace=namespace)  # type: ignore[no-untyped-call]
        self.broker.add_middleware(ScalerMiddleware(prefix=prefix))

    def send(self, queue: str, actor: str = "bench_job", *args: Any) -> tuple[str, float]:
        """Enqueue one message; returns (redis_message_id, wall time just before enqueue)."""
        self.broker.declare_queue(queue)
        msg: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue, actor_name=actor, args=args, kwargs={}, options={}
        )
        at = time.time()
        sent = self.broker.enqueue(msg)
        return str(sent.options["redis_message_id"]), at

    def close(self) -> None:
        """Close the broker's connections."""
        self.broker.close()


def create_times(server: LocalAPIServer, app: str) -> dict[str, float]:
    """Per job (redis_message_id), when the local API received its first create (wall time)."""
    out: dict[str, float] = {}
    for m in server.state.machines(app):
        job = (m.config.get("metadata") or {}).get(META_JOB)
        if job and (job not in out or m.created_at < out[job]):
            out[job] = m.created_at
    return out


class SimJobs:
    """A thread that finishes the job of every started sim machine of ``app`` (ack)."""

    def __init__(
        self, server: LocalAPIServer, app: str, redis_url: str, namespace: str, prefix: str
    ) -> None:
        self.server, self.app = server, app
        self.namespace, self.prefix = namespace, prefix
        self.client = redis.Redis.from_url(redis_url)
        self._seen: set[str] = set()
        self._slot_runs: set[tuple[str, str, int]] = set()
        self._slot_boots: set[tuple[str, Any]] = set()
        self.started: dict[str, float] = {}
        """Per job (redis_message_id), when this helper saw its machine started (wall time)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-simjobs", daemon=True)

    def __enter__(self) -> SimJobs:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for m in self.server.state.machines(self.app):
                if m.id in self._seen or m.state != "started":
                    continue
                env = m.config.get("env") or {}
                job, queue = env.get("FLY_SCALER_MESSAGE"), env.get("FLY_SCALER_QUEUE")
                launch: int | None = None
                if not job:  # a warm slot: its job is the one bound to it (as the runner finds)
                    # One Redis read per run of the slot (its newest event is that run's start),
                    # not one per started slot every poll: this thread shares the process, and
                    # its GIL, with the local API and the scaler being measured.
                    boot = (m.id, m.events[0].get("timestamp") if m.events else None)
                    if boot in self._slot_boots:
                        continue
                    binding = read_binding(self.client, self.prefix, m.id)
                    if binding is None:
                        continue
                    self._slot_boots.add(boot)
                    run = (m.id, binding.job, binding.launch)
                    if run in self._slot_runs:
                        continue
                    self._slot_runs.add(run)
                    job, queue, launch = binding.job, binding.queue, binding.launch
                else:
                    self._seen.add(m.id)
                if not job or not queue:
                    continue
                self.started.setdefault(job, time.time())
                claim = RunnerClaim(
                    self.client, namespace=self.namespace, prefix=self.prefix, queue=queue,
                    redis_message_id=job, launch=launch,
                )
                now_ms = int(time.time() * 1000)
                if claim.mark_running(m.id, now_ms):  # as the runner: its machine is finishing
                    claim.finish("ack", now_ms, machine_id=m.id)
