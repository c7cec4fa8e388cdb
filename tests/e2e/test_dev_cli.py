"""``scaler dev`` as a real subprocess: a finite run proves exactly-once and exits 0; SIGINT and
SIGTERM stop every process it started (machines and the embedded redis-server)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _scaler(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaler.cli", "dev", *args]


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[1] != "Z":
                children.setdefault(st[0], []).append(int(entry.name))
                starts[int(entry.name)] = st[2]
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = starts[child]
            todo.append(child)
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_finite_run_proves_every_job_ran_once_and_leaves_nothing(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    namespace = f"{redis_prefix}dev"
    proc = subprocess.run(
        _scaler("--jobs", "20", "--exit-when-done", "--timeout", "150", "--rate", "3",
                "--namespace", namespace),
        env=_env(REDIS_URL=redis_url), cwd=tmp_path, capture_output=True, text=True,
        timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{proc.stderr[-3000:]}"
    summary = out[out.index("scaler dev summary"):]
    assert re.search(r"jobs:\s+20 \(10 per-job, 10 worker pool\)", summary)
    assert re.search(r"runs:\s+20\n", summary)
    assert re.search(r"duplicates:\s+0\n", summary)
    assert re.search(r"missing:\s+0\n", summary)
    assert re.search(r"machines left:\s+0\n", summary)
    assert re.search(r"machines created:\s+jobs=10 ", summary)  # one machine per per-job job
    assert "result: OK" in summary
    assert not list(redis_client.scan_iter(match=f"{namespace}:*"))  # its keys are cleaned up


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_process_it_started(
    signum: signal.Signals, tmp_path: Path
) -> None:
    log = (tmp_path / "out.txt").open("w")
    proc = subprocess.Popen(
        _scaler("--embedded-redis", "--rate", "4"), env=_env(), cwd=tmp_path, stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        started: dict[int, int] = {}
        while time.monotonic() < deadline:
            found = _descendants(proc.pid)
            runners = [p for p in found if "workers.runner" in _cmdline(p)]
            redis_servers = [p for p in found if "redis-server" in _cmdline(p)]
            if len(runners) >= 2 and redis_servers:
                started = found
                break
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()
            time.sleep(0.1)  # real processes: there is no event to wait on
        assert started, "no machine process started within 90 s"
        proc.send_signal(signum)
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    output = (tmp_path / "out.txt").read_text()
    survivors = {p: _cmdline(p) for p, start in started.items() if _alive(p, start)}
    assert survivors == {}, output[-3000:]
    assert proc.returncode == 0, output[-3000:]  # a requested stop of an endless run
    assert "scaler dev summary" in output
    assert re.search(r"machines left:\s+0\n", output)
