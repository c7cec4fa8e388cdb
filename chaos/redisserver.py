"""A private ``redis-server`` on a fixed free loopback port, for scenarios that pause, kill and
restart Redis without touching the shared one."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from chaos.procs import Proc
from scaler.dev.redis import answers
from scaler.local.testing import eventually, free_port

__all__ = ["PrivateRedis"]


class PrivateRedis:
    """``redis-server`` on a port of its own; :meth:`kill` and :meth:`start` keep the port, so
    clients configured with :attr:`url` reconnect to the new server. ``persistent``: an
    append-only file synced on every write, so a killed server comes back with its data (as a
    production Redis would); otherwise a kill loses everything."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install "
                               "redis-server; .ci/setup installs it)")
        self.port = free_port()
        data = workdir / f"redis-{self.port}"
        data.mkdir(parents=True, exist_ok=True)
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else [
            "--appendonly", "no"]
        self.proc = Proc("redis", [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof,
            "--dir", str(data), "--protected-mode", "no", "--loglevel", "warning",
        ], env={}, cwd=data, log_path=workdir / "redis.log")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        """Start (again) and wait until it answers."""
        self.proc.start()
        eventually(lambda: answers(self.url, 0.5), 15, "the private redis-server", 0.05)
        return self

    def pause(self, seconds: float) -> None:
        """``CLIENT PAUSE``: every client's commands wait ``seconds``."""
        client = redis.Redis.from_url(self.url)
        try:
            client.client_pause(int(seconds * 1000), all=True)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: every key is gone (no persistence), like a lost Redis."""
        self.proc.kill()

    def close(self) -> None:
        """Stop it."""
        self.proc.terminate()

    @staticmethod
    def available() -> bool:
        """Whether ``redis-server`` is installed."""
        return shutil.which("redis-server") is not None


