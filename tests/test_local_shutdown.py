"""Shutdown leaves no machine process behind: the helper's close() and the CLI on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from scaler.local import LocalAPIServer
from scaler.local.testing import eventually, free_port, make_app, make_machine, py, wait_state

# The machine forks a grandchild in its process group and records both pids.
_FAMILY = (
    "import os, time, pathlib; child = os.fork()\n"
    "if child == 0:\n    time.sleep(3600)\n"
    "else:\n    pathlib.Path('pids').write_text(f'{os.getpid()} {child}'); time.sleep(3600)"
)


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie is dead, awaiting its (non-test) parent


def _family_pids(workdir: Path, mid: str) -> list[int]:
    path = workdir / "machines" / mid / "root" / "pids"
    text = eventually(lambda: path.exists() and path.read_text())
    return [int(p) for p in str(text).split()]


def test_close_kills_every_machine_process(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory()
    with api.client() as c:
        app = make_app(c)
        mids = [make_machine(c, app, py(_FAMILY))["id"] for _ in range(3)]
        for mid in mids:
            wait_state(c, app, mid, "started")
    pids = [p for mid in mids for p in _family_pids(api.workdir, mid)]
    assert len(pids) == 6 and not any(_gone(p) for p in pids)
    api.close()
    assert all(_gone(p) for p in pids)
    with pytest.raises(httpx.TransportError):
        httpx.get(api.url + "/v1/apps", timeout=1)


def test_a_stopped_machine_leaves_no_grandchildren(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory()
    with api.client() as c:
        app = make_app(c)
        mid = make_machine(c, app, py(_FAMILY))["id"]
        wait_state(c, app, mid, "started")
        pids = _family_pids(api.workdir, mid)
        c.post(f"/v1/apps/{app}/machines/{mid}/stop", json={"signal": "SIGTERM"})
        wait_state(c, app, mid, "stopped")
    assert all(_gone(p) for p in pids)




def _start_cli(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scaler.cli", "local-api", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_cli_sigterm_stops_machines(tmp_path: Path) -> None:
    port = free_port()
    proc = _start_cli(["--port", str(port), "--token", "cli-token", "--timings", "fast",
                       "--workdir", str(tmp_path)])
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        assert f"FLY_API_URL=http://127.0.0.1:{port}" in banner
        assert "cli-token" not in banner  # a token the user chose is not echoed
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          headers={"Authorization": "Bearer cli-token"}) as c:
            app = make_app(c)
            mid = make_machine(c, app, py(_FAMILY))["id"]
            wait_state(c, app, mid, "started")
        pids = _family_pids(tmp_path, mid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        # the machine processes were children of the CLI, now gone: nothing reaps zombies
        # but init, so "gone" means no live process with that pid.
        eventually(lambda: all(_gone(p) for p in pids))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_generates_a_token_and_prints_it(tmp_path: Path) -> None:
    port = free_port()
    proc = _start_cli(["--port", str(port), "--workdir", str(tmp_path)])
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        token_line = next(line for line in lines if "FLY_API_TOKEN=" in line)
        token = token_line.strip().split("FLY_API_TOKEN=", 1)[1]
        r = httpx.get(f"http://127.0.0.1:{port}/v1/apps", params={"org_slug": "personal"},
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--host", "0.0.0.0", "--allow-remote"], "--token"),
        (["--image", "nocommand"], "IMAGE=CMD"),
        (["--faults", "Machines_create.error_rate=5"], "error_rate"),
        (["--faults", "{bad"], "--faults: "),
        (["--faults", "@/nonexistent/faults.json"], "--faults @/nonexistent/faults.json: cannot"),
    ],
)
def test_cli_refuses_unsafe_or_bad_options(args: list[str], message: str) -> None:
    proc = _start_cli(["--port", str(free_port()), *args])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert message in err



def test_a_busy_port_is_named_before_anything_is_printed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = _start_cli(["--port", str(port)])
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""  # no "export FLY_API_TOKEN=..." for a server that never answers
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    assert "Traceback" not in err


def test_the_importable_server_refuses_a_non_loopback_host_too() -> None:
    from scaler.local.config import LocalAPIConfig

    with pytest.raises(ValueError, match=r"refusing to bind 0\.0\.0\.0"):
        LocalAPIConfig(host="0.0.0.0")
    assert LocalAPIConfig(host="0.0.0.0", allow_remote=True, token="t").host == "0.0.0.0"
    assert LocalAPIConfig(host="::1").host == "::1"
