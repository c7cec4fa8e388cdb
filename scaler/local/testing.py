"""Small helpers for tests that drive the local Machines API over HTTP with httpx."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

__all__ = [
    "SLEEP_FOREVER",
    "eventually",
    "free_port",
    "make_app",
    "make_machine",
    "py",
    "wait_state",
]

T = TypeVar("T")
SLEEP_FOREVER = ["python", "-c", "import time; time.sleep(3600)"]


def py(code: str) -> list[str]:
    """``init.exec`` for a Python one-liner (``python`` maps to this interpreter)."""
    return ["python", "-c", code]


def make_app(client: httpx.Client, name: str | None = None) -> str:
    """Create an app (a unique name by default) and return its name."""
    name = name or f"app-{uuid.uuid4().hex[:10]}"
    r = client.post("/v1/apps", json={"name": name, "org_slug": "personal"})
    assert r.status_code == 201, r.text
    return name


def make_machine(
    client: httpx.Client, app: str, exec_: list[str] | None = None, **fields: Any
) -> dict[str, Any]:
    """Create a machine running ``exec_`` (default: sleep); extra ``config`` keys go in
    ``fields["config"]``, other request fields (name, skip_launch, ...) as keywords."""
    config: dict[str, Any] = {"image": "local/test:latest", **fields.pop("config", {})}
    config.setdefault("init", {"exec": exec_ or SLEEP_FOREVER})
    r = client.post(f"/v1/apps/{app}/machines", json={"config": config, **fields})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_state(
    client: httpx.Client,
    app: str,
    machine_id: str,
    state: str,
    timeout: int = 10,
    version: str | None = None,
) -> dict[str, Any]:
    """Block on ``/wait`` until the machine is in ``state`` (asserts success)."""
    params: dict[str, Any] = {"state": state, "timeout": timeout}
    if version is None and state == "stopped":
        version = client.get(f"/v1/apps/{app}/machines/{machine_id}").json()["instance_id"]
    if version:
        params["version"] = version
    r = client.get(f"/v1/apps/{app}/machines/{machine_id}/wait", params=params,
                   timeout=timeout + 5)
    assert r.status_code == 200, f"waiting for {state}: {r.status_code} {r.text}"
    body: dict[str, Any] = r.json()
    return body


def eventually(
    check: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.02,
) -> T:
    """Poll ``check`` until it returns something truthy (for conditions with no event: a process
    or a server changing state); fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (for servers and tests to bind)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
