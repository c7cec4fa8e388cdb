"""The scaler is SIGKILLed mid-run and restarted: no job is lost, none runs twice, and no job gets a
second machine. The scaler runs as a real `scaler run` process; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scaler.local.testing import free_port
from tests.e2e.world import World
from tests.scaler_harness import ROOT, eventually

pytestmark = pytest.mark.e2e


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _write_config(path: Path, sections: dict[str, dict[str, Any]], pool: dict[str, Any]) -> None:
    lines = []
    for name, body in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in body.items()]
    lines.append("[[pools]]")
    lines += [f"{k} = {_toml(v)}" for k, v in pool.items()]
    path.write_text("\n".join(lines) + "\n")


def _scaler(config: Path, token: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FLY_API_TOKEN": token, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "scaler.cli", "run", "-c", str(config), "--log-format", "json"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
    )


def test_sigkill_mid_run_then_restart_loses_nothing_and_duplicates_nothing(
    world: World, tmp_path: Path
) -> None:
    w = world
    config = tmp_path / "scaler.toml"
    _write_config(
        config,
        {
            "fly": {"api_url": w.server.url},
            "redis": {"url": w.redis_url, "namespace": w.ns, "prefix": w.prefix},
            "scaler": {"resync_interval": "1s", "leader_ttl": "3s", "orphan_grace": "5s"},
            "http": {"host": "127.0.0.1", "port": free_port()},
        },
        {
            "name": "jobs", "mode": "per-job", "app": w.app, "queues": [w.queue],
            "max_machines": 3, "image": "local/sample:latest",
            "cmd": ["python", "-m", "workers.runner"],
            "env": {"SCALER_ACTORS": "tests.apps.sample_tasks", "REDIS_URL": w.redis_url,
                    "SAMPLE_QUEUE": w.queue, "PYTHONPATH": str(ROOT),
                    "FLY_SCALER_PREFIX": w.prefix},
            "boot_timeout": "20s",
        },
    )
    key = f"{w.ns}:out"
    n = 15
    for i in range(n):
        w.enqueue("sleeper", key, 0.3)
        w.r.rpush(f"{w.ns}:expected", str(i))
    log = tmp_path / "scaler.log"
    first = _scaler(config, w.server.token, log)
    try:
        eventually(lambda: w.values(key).count("done") >= 3, timeout=60,
                   what="some jobs done before the kill")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = _scaler(config, w.server.token, log)
        try:
            eventually(lambda: w.values(key).count("done") == n, timeout=120,
                       what="every job done after the restart")
            eventually(lambda: not w.machines(), timeout=60, what="no machine left")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    runs = w.values(key)
    assert runs.count("start") == n, "a job ran twice or was lost"
    per_job = Counter(
        m["config"]["metadata"]["fly_scaler_job"]
        for m in w.machines(include_deleted=True)
    )
    assert len(per_job) == n
    assert set(per_job.values()) == {1}, f"a job got two machines: {per_job}"
