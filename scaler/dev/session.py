"""One ``scaler dev`` run: start everything, show it, stop everything, summarize.

Start order (stopped in reverse, whatever happens): Redis (:mod:`scaler.dev.redis`), a work
directory with the log file, the local Machines API (process runtime) with the two example apps,
the scaler :class:`~scaler.loop.service.Service`, the example producer. SIGINT/SIGTERM ask for a
graceful stop at any point; a second one cuts the graceful waits short (the machines' processes
and the embedded Redis are still stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

import httpx
import redis
import redis.asyncio as aioredis
from prometheus_client import Counter
from rich.console import Console
from rich.live import Live

from scaler.dev.config import (
    JOBS_APP,
    WORKERS_APP,
    WORKERS_POOL,
    DevIds,
    dev_settings,
    run_keys_pattern,
)
from scaler.dev.example_app import ResultKeys, build
from scaler.dev.producer import JobSpec, Producer, job_stream, planned_jobs
from scaler.dev.redis import RedisChoice, RedisUnavailable, delete_keys, resolve_redis
from scaler.dev.summary import Summary, compute_summary, format_summary
from scaler.dev.tracker import MachineTracker
from scaler.dev.view import FIXED_LINES, DecisionRow, QueueRow, Snapshot, plain_line, render

if TYPE_CHECKING:
    from scaler.config import Settings
    from scaler.local.server import LocalAPIServer
    from scaler.loop.service import Service
    from scaler.policy.types import Decision

__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_SETUP", "DevOptions", "DevSession", "run_dev",
]

EXIT_FAILED = 1
EXIT_SETUP = 2
EXIT_INTERRUPTED = 130
_SAMPLE_S = 0.25


@dataclass(frozen=True)
class DevOptions:
    """The options of ``scaler dev`` (see :mod:`scaler.commands.dev`)."""

    jobs: int | None = None
    exit_when_done: bool = False
    timeout: float = 120.0
    timings: str = "fast"
    redis_url: str | None = None
    embedded_redis: bool = False
    view: bool | None = None
    rate: float = 1.5
    namespace: str | None = None
    github: bool = False
    run_time: float = 0.5

    def problems(self) -> list[str]:
        """What is wrong with these options, one line each, naming the option and the fix."""
        out = []
        if self.exit_when_done and self.jobs is None:
            out.append("--exit-when-done needs --jobs N (the endless stream never finishes)")
        if self.jobs is not None and self.jobs < 0:
            out.append(f"--jobs must be 0 or more, got {self.jobs}")
        if self.timeout <= 0:
            out.append(f"--timeout must be above 0 seconds, got {self.timeout:g}")
        if self.rate <= 0:
            out.append(f"--rate must be above 0 jobs/s, got {self.rate:g}")
        if self.github and self.jobs is None:
            out.append("--github needs --jobs N (the GitHub run queues N workflow jobs and "
                       "checks each)")
        if self.run_time < 0:
            out.append(f"--run-time must be 0 or more seconds, got {self.run_time:g}")
        if self.timings not in ("fast", "realistic"):
            out.append(f"--timings must be 'fast' or 'realistic', got {self.timings!r}")
        return out


def _counter_total(counter: Counter, keep: Callable[[Mapping[str, str]], bool]) -> int:
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and keep(sample.labels):
                total += sample.value
    return int(total)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DevSession:
    """Runs ``scaler dev`` once; :meth:`run` returns the exit code."""

    def __init__(self, options: DevOptions, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.ids = DevIds.new(options.namespace)
        self.keys = ResultKeys(self.ids.prefix)
        self.tracker = MachineTracker()
        self.decisions: deque[DecisionRow] = deque(maxlen=8)
        self.signals = 0
        self.summary: Summary | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._last_tick: str | None = None
        self._started = time.monotonic()
        self._problem: str | None = None

    # -- signals ------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._signal_in_loop)

    def _signal_in_loop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self.signals > 1 and self._main_task is not None:
            self._main_task.cancel()

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def say(self, text: str) -> None:
        """Print one line to the run's output."""
        self._say(text)

    def attach(self) -> asyncio.Event:
        """From inside the run's event loop: the event a signal sets to stop gracefully (a
        second signal cancels the calling task)."""
        self._loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        self._stop = asyncio.Event()
        return self._stop

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, run until done or stopped, stop everything; the exit code."""
        problems = self.options.problems()
        if problems:
            for p in problems:
                print(f"scaler dev: {p}", file=self.err)
            return EXIT_SETUP
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        choice: RedisChoice | None = None
        workdir = Path(tempfile.mkdtemp(prefix="scaler-dev-"))
        code = EXIT_FAILED
        try:
            try:
                choice = resolve_redis(self.options.redis_url,
                                       force_embedded=self.options.embedded_redis)
            except RedisUnavailable as exc:
                print(f"scaler dev: {exc}", file=self.err)
                return EXIT_SETUP
            if self.options.github:
                from scaler.dev.github import run_github_dev

                code = run_github_dev(self, choice, workdir)
            else:
                code = self._run_with_redis(choice, workdir)
            return code
        finally:
            if choice is not None:
                self._clean_keys(choice.url)
                choice.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if code == 0:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"scaler dev: logs kept in {workdir}", file=self.err)

    def _run_with_redis(self, choice: RedisChoice, workdir: Path) -> int:
        from scaler.local.server import LocalAPIServer
        from scaler.telemetry.logging import configure_logging

        log_path = workdir / "scaler.log"
        with log_path.open("a") as log_file:
            configure_logging(json=True, level="info", stream=log_file)
            self._say(f"scaler dev: namespace {self.ids.namespace}; redis {choice.description}")
            if self.signals:
                return EXIT_INTERRUPTED
            server = LocalAPIServer(runtime="process", timings=self.options.timings,
                                    rate_limits="fly", workdir=workdir / "machines")
            try:
                self._say(f"scaler dev: local Machines API {server.url} "
                          f"({self.options.timings} timings); logs {log_path}")
                with server.client(timeout=30) as api:
                    for app in (JOBS_APP, WORKERS_APP):
                        r = api.post("/v1/apps", json={"name": app, "org_slug": "personal"})
                        r.raise_for_status()
                settings = dev_settings(api_url=server.url, token=server.token,
                                        redis_url=choice.url, ids=self.ids)
                info = (("redis", choice.description),
                        ("machines API", f"{server.url}  ({self.options.timings} timings)"),
                        ("namespace", f"{self.ids.namespace}  logs {log_path}"))
                if not self.signals:
                    asyncio.run(self._main(server, settings, info))
            finally:
                server.close()
                # the log file closes with this block: later records go to stderr
                configure_logging(json=False, level="warning", stream=self.err)
        assert self.summary is not None or self.signals
        if self.summary is None:
            return EXIT_INTERRUPTED
        self._say(format_summary(self.summary))
        if self.options.exit_when_done:
            if self.summary.ok:
                return 0
            return EXIT_INTERRUPTED if self.signals and self._problem is None else EXIT_FAILED
        return 0 if self.summary.machines_left == 0 else EXIT_FAILED

    async def _main(self, server: LocalAPIServer, settings: Settings,
                    info: tuple[tuple[str, str], ...]) -> None:
        self._loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        self._stop = asyncio.Event()
        try:
            await self._session(server, settings, info)
        except asyncio.CancelledError:
            if self.signals < 2:
                raise
            # a second signal: the graceful part was cut short; the caller still cleans up
            self._problem = self._problem or "interrupted"

    async def _session(self, server: LocalAPIServer, settings: Settings,
                       info: tuple[tuple[str, str], ...]) -> None:
        from scaler.loop.service import Service

        assert self._stop is not None
        stop = self._stop
        opts = self.options
        app = build(settings.redis.url.get_secret_value(), self.ids.namespace, self.ids.prefix)
        producer = Producer(app)
        jobs: Iterable[JobSpec] = planned_jobs(opts.jobs) if opts.jobs is not None else job_stream()
        service = Service(settings, http=True, http_port=0)
        service_stop, producer_stop = asyncio.Event(), asyncio.Event()
        service_task = asyncio.create_task(service.run(service_stop), name="scaler")
        producer_task = asyncio.create_task(producer.run(jobs, opts.rate, producer_stop),
                                            name="producer")
        rclient = aioredis.Redis.from_url(settings.redis.url.get_secret_value())
        self._started = time.monotonic()
        try:
            await self._watch(server, service, producer, producer_task, service_task, rclient,
                              info)
        finally:
            producer_stop.set()
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer_task, timeout=10)
            service_stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(service_task, timeout=40)
            self.tracker.observe(server.state.machines())
            left = self.tracker.by_state()
            destroyed = await self._destroy_all(server)
            machines_left = len(self.tracker.remaining())
            runs: dict[str, int] = {}
            with contextlib.suppress(redis.RedisError):
                raw = await rclient.hgetall(self.keys.runs)
                runs = {_text(k): int(v) for k, v in raw.items()}
            self.summary = compute_summary(
                sent=producer.sent, runs=runs, failed=self._dead(service),
                send_errors=producer.errors, tracker=self.tracker,
                wall_time_s=time.monotonic() - self._started, left_by_scaler=left,
                destroyed_at_exit=destroyed, machines_left=machines_left,
                problem=self._problem, target=self.options.jobs,
                checked=self.options.exit_when_done,
            )
            await rclient.aclose()
            with contextlib.suppress(Exception):
                app.broker.close()

    async def _watch(self, server: LocalAPIServer, service: Service, producer: Producer,
                     producer_task: asyncio.Task[None], service_task: asyncio.Task[None],
                     rclient: aioredis.Redis, info: tuple[tuple[str, str], ...]) -> None:
        assert self._stop is not None
        opts = self.options
        tty = self.out.isatty()
        use_live = opts.view if opts.view is not None else tty
        lines = opts.view is None and not tty  # CI: a plain line per second
        console = Console(file=self.out, force_terminal=tty or None)
        live = Live(console=console, auto_refresh=False, transient=False) if use_live else None
        deadline = self._started + opts.timeout
        n = 0
        if live is not None:
            live.start()
        try:
            while not self._stop.is_set():
                if service_task.done():
                    exc = service_task.exception()
                    self._problem = f"the scaler stopped: {exc!r}" if exc else "the scaler stopped"
                    break
                snap = await self._snapshot(server, service, producer, rclient, info)
                if live is not None:
                    rows = max(1, console.size.height - FIXED_LINES - len(snap.info)
                               - max(1, len(snap.queues)))
                    live.update(render(snap, max_decisions=rows), refresh=True)
                elif lines and n % round(1 / _SAMPLE_S) == 0:
                    self._say(plain_line(snap))
                n += 1
                if opts.exit_when_done:
                    waiting = self._waiting_for(snap, producer_task, service, opts.jobs or 0)
                    if not waiting:
                        break
                    if time.monotonic() > deadline:
                        self._problem = (f"timed out after {opts.timeout:g}s waiting for "
                                         f"{waiting}")
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=_SAMPLE_S)
        finally:
            if live is not None:
                live.stop()

    def _waiting_for(self, snap: Snapshot, producer_task: asyncio.Task[None], service: Service,
                     target: int) -> str:
        """What the run still waits for before it is done ('' when done)."""
        if not producer_task.done():
            return "the jobs to be sent"
        if snap.jobs_done - snap.duplicates + snap.jobs_failed < target:
            return f"jobs to finish ({snap.jobs_done - snap.duplicates}/{target} ran)"
        busy = [q for q, row in snap.queues.items()
                if row is None or row.ready or row.in_flight or row.delayed or row.claimed]
        if busy:
            return f"queues to empty ({', '.join(sorted(busy))})"
        running = self.tracker.not_final()
        if running:
            return f"{len(running)} machine(s) to finish"
        warm = service.settings.pool(WORKERS_POOL).warm_machines
        stopped = sum(1 for m in self.tracker.remaining() if m.state == "stopped")
        if stopped > warm:
            return f"{stopped - warm} extra stopped machine(s) to be reaped"
        return ""

    async def _snapshot(self, server: LocalAPIServer, service: Service, producer: Producer,
                        rclient: aioredis.Redis, info: tuple[tuple[str, str], ...]) -> Snapshot:
        self.tracker.observe(server.state.machines())
        done = dups = 0
        with contextlib.suppress(redis.RedisError):
            got = await rclient.mget([self.keys.done, self.keys.duplicates])
            done, dups = (int(v or 0) for v in got)
        last = service.reconciler.last
        queues: dict[str, QueueRow | None] = {}
        if last is not None:
            for name, v in last.observation.queues.items():
                queues[name] = None if v is None else QueueRow(
                    v.ready, v.in_flight, v.delayed, v.claimed, v.dead)
            if last.tick_id != self._last_tick:
                self._last_tick = last.tick_id
                self._remember(last.plan.decisions)
        rows = tuple(self.decisions)
        if not rows and last is not None:
            rows = tuple(self._row(d) for d in last.plan.decisions[-8:])
        m = service.metrics
        extra = (("metrics", f"http://127.0.0.1:{service.http_port}/metrics"),) \
            if service.http_port else ()
        return Snapshot(
            elapsed=time.monotonic() - self._started,
            queues=queues,
            machines=self.tracker.by_state(),
            created=self.tracker.created(),
            launches=_counter_total(m.launches, lambda lb: lb.get("result") in (
                "created", "started")),
            reaps=_counter_total(m.reaps, lambda lb: True),
            jobs_sent=len(producer.sent),
            jobs_target=self.options.jobs,
            jobs_done=done,
            jobs_failed=self._dead(service),
            duplicates=dups,
            decisions=rows,
            info=info + extra,
            status="stopping" if self._stop is not None and self._stop.is_set() else "running",
        )

    def _row(self, d: Decision) -> DecisionRow:
        return DecisionRow(time.monotonic() - self._started, d.pool or "-", d.outcome, d.kind,
                           d.reason, d.message)

    def _remember(self, decisions: Iterable[Decision]) -> None:
        for d in decisions:
            if d.outcome == "not_taken" and d.reason == "no_demand":
                continue
            last = next((r for r in reversed(self.decisions)
                         if (r.pool, r.kind, r.outcome, r.reason) ==
                         (d.pool or "-", d.kind, d.outcome, d.reason)), None)
            if last is not None and last.message == d.message:
                continue
            self.decisions.append(self._row(d))

    @staticmethod
    def _dead(service: Service) -> int:
        last = service.reconciler.last
        if last is None:
            return 0
        return sum(v.dead for v in last.observation.queues.values() if v is not None)

    async def _destroy_all(self, server: LocalAPIServer) -> int:
        """Destroy every machine not yet destroyed; returns how many were destroyed."""
        targets = self.tracker.remaining()
        if not targets:
            return 0
        async with server.async_client(timeout=10) as api:
            async def destroy(app: str, mid: str) -> None:
                for _attempt in range(20):
                    try:
                        r = await api.delete(f"/v1/apps/{app}/machines/{mid}",
                                             params={"force": "true"})
                    except httpx.HTTPError:
                        return
                    if r.status_code != 429:
                        return
                    await asyncio.sleep(float(r.headers.get("retry-after", "0.5") or 0.5))

            await asyncio.gather(*(destroy(m.app, m.id) for m in targets))
        loop = asyncio.get_running_loop()
        until = loop.time() + 15
        while loop.time() < until:
            self.tracker.observe(server.state.machines())
            if not self.tracker.remaining():
                break
            await asyncio.sleep(0.1)  # the local API destroys asynchronously; nothing to wait on
        return len(targets) - len(self.tracker.remaining())

    def _clean_keys(self, url: str) -> None:
        """Delete every key of the run (under ``{namespace}:``)."""
        try:
            client = redis.Redis.from_url(url, socket_timeout=5)
            try:
                removed = delete_keys(client, run_keys_pattern(self.ids))
            finally:
                client.close()
        except redis.RedisError as exc:
            print(f"scaler dev: could not delete the keys under {self.ids.namespace}: "
                  f"{type(exc).__name__}", file=self.err)
            return
        self._say(f"scaler dev: removed {removed} Redis keys under {self.ids.namespace}:")


def run_dev(options: DevOptions) -> int:
    """Run ``scaler dev`` with ``options``; the exit code."""
    try:
        session = DevSession(options)
    except ValueError as exc:
        print(f"scaler dev: {exc}", file=sys.stderr)
        return EXIT_SETUP
    return session.run()
