"""``scaler run`` as a process of the tree under test: its config written from a dict, its
``/metrics`` and ``/readyz`` read over HTTP, its JSON log parsed, and SIGKILL / SIGSTOP / SIGCONT /
SIGTERM / restart at will."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from chaos import toml
from chaos.procs import Proc
from chaos.tree import Tree
from scaler.local.testing import eventually

__all__ = ["ScalerProc"]


class ScalerProc:
    """One scaler replica. ``config`` is the whole config as a dict; its ``[http]`` port is
    where ``/metrics`` and ``/readyz`` answer."""

    def __init__(
        self, name: str, config: Mapping[str, Any], *, tree: Tree, workdir: Path,
        env: Mapping[str, str],
    ) -> None:
        self.name = name
        self.config = config
        self.config_path = workdir / f"scaler-{name}.toml"
        self.config_path.write_text(toml.dumps(config))
        self.http_port = int(config["http"]["port"])
        argv = [sys.executable, "-m", "scaler.cli", "run", "-c", str(self.config_path),
                "--log-format", "json", "--log-level", "info"]
        self.proc = Proc(f"scaler-{name}", argv, env=tree.env(env), cwd=tree.root,
                         log_path=workdir / f"scaler-{name}.log")

    # -- life ---------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> ScalerProc:
        """Start it and wait until its HTTP port answers ``/healthz``."""
        self.proc.start()

        def up() -> bool:
            if not self.proc.alive:
                raise RuntimeError(f"scaler {self.name} exited {self.proc.returncode}:\n"
                                   f"{self.proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self._url("/healthz"), timeout=1).status_code == 200
            return False

        eventually(up, timeout, f"scaler {self.name} to serve /healthz", interval=0.05)
        return self

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is released)."""
        self.proc.kill()

    def freeze(self) -> None:
        """SIGSTOP (a long GC pause, a frozen VM)."""
        self.proc.freeze()

    def thaw(self) -> None:
        """SIGCONT."""
        self.proc.thaw()

    def terminate(self) -> int | None:
        """SIGTERM (a deploy): it finishes its tick and releases the lease; the exit code."""
        return self.proc.terminate()

    @property
    def pid(self) -> int:
        """Its process id (part of its leader-lease owner name)."""
        return self.proc.pid

    # -- reading it ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``: (name, sorted labels) -> value. Empty if it does not
        answer (killed, frozen)."""
        try:
            text = httpx.get(self._url("/metrics"), timeout=2).text
        except httpx.HTTPError:
            return {}
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items()
                   if n == name and want <= set(ls))

    def readyz(self) -> int | None:
        """The ``/readyz`` status code, or None when it does not answer within 2 s."""
        try:
            return httpx.get(self._url("/readyz"), timeout=2).status_code
        except httpx.HTTPError:
            return None

    def log_events(self) -> list[dict[str, Any]]:
        """Its structured log lines (JSON), in order; other output is skipped."""
        out = []
        for line in self.proc.log_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        out.append(event)
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its log events whose ``event`` is ``name`` (e.g. ``"machine destroyed"``)."""
        return [e for e in self.log_events() if e.get("event") == name]
