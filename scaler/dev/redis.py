"""The Redis that ``scaler dev`` uses: one that already answers, or a private ``redis-server``.

:func:`resolve_redis` picks it: ``--redis-url`` (must answer), else ``REDIS_URL`` (or the default
``redis://127.0.0.1:6379/0``) when it answers, else an :class:`EmbeddedRedis` started on a free
loopback port with persistence off. No ``redis-server`` on PATH is a :class:`RedisUnavailable`
error saying how to install one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from scaler.config import mask_url
from scaler.local.testing import free_port

__all__ = [
    "DEFAULT_REDIS_URL",
    "INSTALL_HINT",
    "EmbeddedRedis",
    "RedisChoice",
    "RedisUnavailable",
    "answers",
    "delete_keys",
    "resolve_redis",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
INSTALL_HINT = (
    "install redis-server (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install "
    "redis) or point --redis-url / REDIS_URL at a running Redis"
)


class RedisUnavailable(RuntimeError):
    """No usable Redis: the message says what was tried and how to fix it."""


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis at ``url`` answers PING within ``timeout`` seconds."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def delete_keys(client: redis.Redis, pattern: str, batch: int = 1000) -> int:
    """Delete every key matching the SCAN ``pattern``, ``batch`` at a time; how many were."""
    deleted = 0
    keys: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=batch):
        keys.append(key)
        if len(keys) >= batch:
            deleted += int(client.unlink(*keys))
            keys.clear()
    if keys:
        deleted += int(client.unlink(*keys))
    return deleted




def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when we die (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


class EmbeddedRedis:
    """A private ``redis-server`` on a free loopback port, without persistence, until :meth:`stop`.

    It runs in its own session, so a Ctrl-C in the terminal reaches ``scaler dev`` only, which
    then stops it after cleaning up; on Linux it also dies with its parent.
    """

    def __init__(
        self, binary: str | None = None, *, host: str = "127.0.0.1", startup_timeout: float = 15.0
    ) -> None:
        found = shutil.which(binary or "redis-server")
        if found is None:
            what = f"{binary!r} is not an executable" if binary else "redis-server is not on PATH"
            raise RedisUnavailable(f"{what}: {INSTALL_HINT}")
        self.binary = found
        self.host = host
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0`` once started."""
        if self.port is None:
            raise RuntimeError("the embedded redis-server is not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process is not None else None

    def start(self) -> str:
        """Start the server and wait until it answers; returns its URL."""
        last = "it did not start"
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port(self.host)
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    last = f"it exited with code {self.process.returncode}"
                    break
                if answers(self.url, timeout=0.5):
                    return self.url
                time.sleep(0.05)
            else:
                last = f"it did not answer within {self.startup_timeout:g}s"
            self.stop()
        raise RedisUnavailable(f"the embedded redis-server ({self.binary}) failed: {last}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)


@dataclass
class RedisChoice:
    """The Redis picked by :func:`resolve_redis`; ``embedded`` is set when we started it."""

    url: str
    embedded: EmbeddedRedis | None = None

    @property
    def description(self) -> str:
        """For humans: the URL with any password masked, and whether it is ours."""
        where = mask_url(self.url)
        if self.embedded is not None:
            return f"{where} (embedded redis-server, pid {self.embedded.pid})"
        return where

    def close(self) -> None:
        """Stop the embedded server, if any."""
        if self.embedded is not None:
            self.embedded.stop()


def resolve_redis(
    explicit_url: str | None,
    *,
    env: dict[str, str] | None = None,
    force_embedded: bool = False,
) -> RedisChoice:
    """Pick the Redis to use (see the module docstring). Raises :class:`RedisUnavailable`."""
    environ = os.environ if env is None else env
    if not force_embedded:
        if explicit_url:
            if not answers(explicit_url):
                raise RedisUnavailable(
                    f"--redis-url {mask_url(explicit_url)} does not answer; start that Redis "
                    "or leave --redis-url out to use an embedded redis-server"
                )
            return RedisChoice(explicit_url)
        url = environ.get("REDIS_URL") or DEFAULT_REDIS_URL
        if answers(url):
            return RedisChoice(url)
        if shutil.which("redis-server") is None:
            raise RedisUnavailable(
                f"no Redis answers at {mask_url(url)} and redis-server is not on PATH: "
                + INSTALL_HINT
            )
    server = EmbeddedRedis()
    return RedisChoice(server.start(), server)
