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
    """``redis-server`` without persistence; :meth:`kill` and :meth:`start` keep its port, so
    clients configured with :attr:`url` reconnect to the new server."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install "
                               "redis-server; .ci/setup installs it)")
        self.port = free_port()
        self.proc = Proc("redis", [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning",
        ], env={}, cwd=workdir, log_path=workdir / "redis.log")

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


