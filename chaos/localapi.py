"""``scaler local-api`` (run as ``python -m scaler.local``) in its own process for a scenario,
always the current checkout's, and a client for its admin side: faults at run time, counters, the
create log, machines listed without spending the app's rate budget."""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT
from chaos.procs import Proc, kill_under
from scaler.local.testing import SLEEP_FOREVER, eventually, free_port, make_app

__all__ = ["LocalAPI"]


class LocalAPI:
    """The local Machines API process. ``url`` and ``token`` are what a scaler config needs."""

    def __init__(
        self, workdir: Path, *, faults: Mapping[str, Any] | None = None, seed: int = 0,
        timings: str = "fast", rate_limits: str = "fly", runtime: str = "process",
        env: Mapping[str, str],
    ) -> None:
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.port = free_port()
        argv = [
            sys.executable, "-m", "scaler.local", "--port", str(self.port),
            "--token", self.token, "--runtime", runtime, "--timings", timings,
            "--rate-limits", rate_limits, "--seed", str(seed), "--workdir", str(workdir / "api"),
        ]
        if faults:
            argv += ["--faults", json.dumps(faults)]
        self.proc = Proc("local-api", argv, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                         log_path=workdir / "local-api.log")
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   headers={"Authorization": f"Bearer {self.token}"})

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> LocalAPI:
        """Start and wait until it answers."""
        self.proc.start()

        def answers() -> bool:
            if not self.proc.alive:
                raise RuntimeError(f"the local API exited:\n{self.proc.tail()}")
            try:
                return self.client.get("/_admin/state").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(answers, timeout, "the local Machines API to answer", interval=0.05)
        return self

    def close(self) -> None:
        """Stop it (it stops its machines); then kill any machine process it left behind."""
        self.client.close()
        self.proc.terminate()
        kill_under(self.workdir / "api")

    # -- admin ------------------------------------------------------------------------------

    def set_faults(self, spec: Mapping[str, Any] | None = None, seed: int | None = None) -> None:
        """Replace the faults in effect (``None`` or ``{}``: none)."""
        body: dict[str, Any] = dict(spec or {})
        if seed is not None:
            body["seed"] = seed
        r = self.client.post("/_admin/faults", json=body)
        if r.status_code != 200:
            raise ValueError(f"faults refused: {r.text}")

    def state(self) -> dict[str, Any]:
        """``/_admin/state``: requests by operation and status, 429s, live and peak per app."""
        out: dict[str, Any] = self.client.get("/_admin/state").json()
        return out

    def creates(self) -> list[dict[str, Any]]:
        """The create log: ``{t, answered, status, agent, name, metadata}``, oldest first."""
        out: list[dict[str, Any]] = self.client.get("/_admin/creates").json()
        return out

    def requests(self, operation: str | None = None) -> list[dict[str, Any]]:
        """The last requests ``{t, operation, status}``, oldest first."""
        params = {"operation": operation} if operation else {}
        out: list[dict[str, Any]] = self.client.get("/_admin/requests", params=params).json()
        return out

    def plant(self, app: str, metadata: dict[str, str]) -> str:
        """Create a sleeping machine with ``metadata`` in ``app`` (as if another process or an
        earlier scaler made it); waits out Fly's create limit when it answers 429."""
        body = {"config": {"image": "local/seed:latest", "init": {"exec": SLEEP_FOREVER},
                           "metadata": metadata, "restart": {"policy": "no"}}}
        while True:
            r = self.client.post(f"/v1/apps/{app}/machines", json=body)
            if r.status_code != 429:
                r.raise_for_status()
                return str(r.json()["id"])
            time.sleep(float(r.headers.get("retry-after", "1")))

    def machines(self, app: str) -> list[dict[str, Any]]:
        """Every machine of ``app``, destroyed ones included (no fault, no rate limit)."""
        out: list[dict[str, Any]] = self.client.get(f"/_admin/apps/{app}/machines").json()
        return out

    def exit_machine(self, app: str, machine_id: str, code: int) -> int:
        """End a machine's main process with ``code`` now; the HTTP status."""
        r = self.client.post(f"/_admin/apps/{app}/machines/{machine_id}/exit",
                             json={"exit_code": code})
        return r.status_code

    def create_app(self) -> str:
        """A fresh app (created with faults off: set them after)."""
        return make_app(self.client)

    def rate_limited(self) -> int:
        """429 answers so far, every operation."""
        return sum(int(n) for n in self.state().get("rate_limited", {}).values())

    def peak_live(self, app: str) -> int:
        """The most live machines ``app`` had at once."""
        return int(self.state().get("peak_live", {}).get(app, 0))
