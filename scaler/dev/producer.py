"""The example app's producer: a stream of jobs of both kinds, sent at a steady rate.

Jobs alternate between ``thumbnail`` (queue ``jobs``, per-job machines) and ``send_email`` (queue
``default``, the worker pool); every third thumbnail asks for a bigger machine through
:func:`workers.enqueue.send_with_machine`. Each send is remembered (job id, dramatiq
``redis_message_id``, time) for the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from scaler.dev.example_app import ExampleApp
from scaler.jobs.enqueue import send_with_machine

__all__ = [
    "BIG_CPUS", "BIG_MEMORY_MB", "JobSpec", "Producer", "SentJob", "job_stream", "planned_jobs",
]

Kind = Literal["thumbnail", "send_email"]
BIG_CPUS, BIG_MEMORY_MB = 2, 512
"""The machine size of the thumbnails sent with ``send_with_machine``."""


@dataclass(frozen=True)
class JobSpec:
    """One job to send: ``big`` ones go through ``send_with_machine`` (2 CPUs, 512 MB)."""

    job_id: str
    kind: Kind
    big: bool = False


@dataclass(frozen=True)
class SentJob:
    """A job that was enqueued, when, and under which dramatiq ``redis_message_id``."""

    spec: JobSpec
    redis_message_id: str
    sent_at: float


def job_stream(start: int = 0) -> Iterator[JobSpec]:
    """An endless, deterministic stream of jobs (see the module docstring)."""
    for i in itertools.count(start):
        if i % 2 == 0:
            yield JobSpec(f"thumbnail-{i}", "thumbnail", big=(i // 2) % 3 == 2)
        else:
            yield JobSpec(f"email-{i}", "send_email")


def planned_jobs(n: int) -> list[JobSpec]:
    """The first ``n`` jobs of :func:`job_stream` (``ceil(n/2)`` thumbnails, the rest emails)."""
    if n < 0:
        raise ValueError(f"--jobs must be 0 or more, got {n}")
    return list(itertools.islice(job_stream(), n))


class Producer:
    """Sends jobs through the example app's broker and remembers what it sent."""

    def __init__(self, app: ExampleApp, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.clock = clock
        self.sent: list[SentJob] = []
        self.errors = 0

    def send(self, spec: JobSpec) -> SentJob:
        """Enqueue one job now (blocking Redis I/O)."""
        at = self.clock()
        if spec.kind == "thumbnail":
            if spec.big:
                message = send_with_machine(self.app.thumbnail, spec.job_id, cpus=BIG_CPUS,
                                            memory_mb=BIG_MEMORY_MB)
            else:
                message = self.app.thumbnail.send(spec.job_id)
        else:
            message = self.app.send_email.send(spec.job_id)
        sent = SentJob(spec, str(message.options["redis_message_id"]), at)
        self.sent.append(sent)
        return sent

    async def run(self, jobs: Iterable[JobSpec], rate: float, stop: asyncio.Event) -> None:
        """Send ``jobs`` at ``rate`` per second until they run out or ``stop`` is set.

        A failed send (Redis unreachable) is counted and the stream goes on with the next job.
        """
        if rate <= 0:
            raise ValueError(f"--rate must be above 0 jobs/s, got {rate}")
        loop = asyncio.get_running_loop()
        started = loop.time()
        for k, spec in enumerate(jobs):
            wait = started + k / rate - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(self.send, spec)
            except Exception:  # counted, shown in the view and the summary
                self.errors += 1
