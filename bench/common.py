"""What every scenario shares: result rows, statistics, Redis key hygiene, a scaler service on a
background thread, and the machine description written into the JSON."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import redis

from scaler.config import Settings, parse_settings
from scaler.dev.redis import delete_keys
from scaler.dev.summary import percentile
from scaler.local.testing import eventually, free_port
from scaler.loop.service import Service

__all__ = [
    "ROOT",
    "BenchConfig",
    "ServiceThread",
    "UnlimitedGovernor",
    "machine_description",
    "median",
    "percentile",
    "records",
    "redis_keys",
    "row",
    "scenario_settings",
    "stop_group",
]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchConfig:
    """How big to run: ``quick`` for a smoke run, ``scale`` shrinks further (tests use < 1)."""

    quick: bool = True
    redis_url: str = field(
        default_factory=lambda: os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    scale: float = 1.0
    key_prefix: str = "bench"
    """Every Redis key a scenario writes starts with this (then the scenario id and a nonce)."""

    def n(self, quick: int, full: int, minimum: int = 1) -> int:
        """A count for this mode, scaled."""
        return max(minimum, int((quick if self.quick else full) * self.scale))


def row(
    scenario: str,
    figure: str,
    goal: str,
    measured: float | None,
    unit: str,
    *,
    baseline: float | None = None,
    passed: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One line of the table. ``ratio`` is measured / baseline when both exist."""
    ratio = (
        measured / baseline if measured is not None and baseline not in (None, 0) else None
    )
    return {
        "scenario": scenario, "figure": figure, "goal": goal, "measured": measured,
        "unit": unit, "baseline": baseline, "ratio": ratio, "passed": passed, "note": note,
    }


def median(values: Sequence[float]) -> float | None:
    """The median, or ``None`` for no values."""
    return statistics.median(values) if values else None


@contextlib.contextmanager
def redis_keys(cfg: BenchConfig, scenario: str) -> Iterator[str]:
    """A unique key prefix for one scenario; every key under it is deleted afterwards."""
    prefix = f"{cfg.key_prefix}-{scenario.lower()}-{uuid.uuid4().hex[:8]}"
    url = cfg.redis_url
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        try:
            delete_keys(client, f"{prefix}*", batch=5000)
        finally:
            client.close()


def scenario_settings(
    *, api_url: str, token: str, redis_url: str, prefix: str, pools: list[dict[str, Any]],
    scaler: dict[str, Any] | None = None,
) -> Settings:
    """Settings on the local API and Redis; namespace ``prefix``, scaler keys ``prefix:fs``."""
    data = {
        "fly": {"api_url": api_url},
        "redis": {"url": redis_url, "namespace": prefix, "prefix": f"{prefix}:fs"},
        "scaler": {"max_machines": 100_000, "resync_interval": "1s", "orphan_grace": "30s",
                   "shared_rate_limits": False, **(scaler or {})},
        "pools": pools,
    }
    return parse_settings(data, env={"FLY_API_TOKEN": token})


class UnlimitedGovernor:
    """A governor that never waits: for scenarios where the rate limit is not what is measured."""

    async def acquire(self, action: str, scope: str) -> float:
        """Never waits."""
        return 0.0

    def penalize(self, action: str, scope: str, retry_after: float | None) -> None:
        """Ignores 429s (the local API runs with rate limits off here)."""

    async def try_acquire(self, action: str, scope: str) -> bool:
        """Always grants."""
        return True

    async def available(self, action: str, scope: str) -> float:
        """A budget no tick exhausts."""
        return 1e9


class ServiceThread:
    """A :class:`Service` on its own event-loop thread until :meth:`stop` (or ``with``)."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.settings = settings
        self.options = {"http": False, **options}
        self.service: Service | None = None
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="bench-scaler", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def go() -> None:
            self._stop = asyncio.Event()
            self.service = Service(self.settings, **self.options)
            self._started.set()
            await self.service.run(self._stop)

        try:
            self._loop.run_until_complete(go())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._started.set()

    def start(self) -> ServiceThread:
        """Start and wait until the service object exists."""
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self, timeout: float = 30) -> None:
        """Stop the service; raises what it died of, if anything."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the scaler service did not stop")
        self._loop.close()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def local_api_process(workdir: Path, *, rate_limits: str = "off") -> Iterator[httpx.Client]:
    """``scaler local-api`` (process runtime) in its own process, as Fly is in production: the
    scaler measured does not share a GIL with the API it calls. Yields a client on it (its
    ``base_url`` and token are what the scaler needs: ``api_base(client)``, ``api_token``)."""
    import secrets

    port = free_port()
    token = secrets.token_hex(16)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaler.cli", "local-api", "--port", str(port), "--token", token,
         "--runtime", "process", "--timings", "fast", "--rate-limits", rate_limits,
         "--workdir", str(workdir)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"})
    try:
        def answers() -> bool:
            try:
                return client.get("/v1/platform/regions").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(answers, 30, "the local Machines API process")
        yield client
    finally:
        client.close()
        proc.terminate()  # it stops every machine process it started
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it forked: SIGTERM
    to its process group, SIGKILL if it has not exited within 15 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def api_token(client: httpx.Client) -> str:
    """The bearer token of a :func:`local_api_process` client."""
    return str(client.headers["Authorization"]).removeprefix("Bearer ")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _versions() -> dict[str, str]:
    out = {}
    for name in ("fly-scaler", "dramatiq", "redis", "httpx", "starlette", "uvicorn", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _redis_version(url: str) -> str | None:
    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(url)
        try:
            return str(client.info("server").get("redis_version"))
        finally:
            client.close()
    return None


def machine_description(redis_url: str) -> dict[str, Any]:
    """Where the numbers were measured: CPU, memory, Python, packages, commit and date."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_mb": _memory_mb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": _versions(),
        "redis_server": _redis_version(redis_url),
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def records(client: redis.Redis, key: str) -> list[tuple[str, float, str]]:
    """Parse what :mod:`bench.actors` wrote to the list ``key``: (event, epoch s, where)."""
    out = []
    for raw in client.lrange(key, 0, -1):
        event, at, where = (raw.decode() if isinstance(raw, bytes) else str(raw)).split(" ", 2)
        out.append((event, float(at), where))
    return out
