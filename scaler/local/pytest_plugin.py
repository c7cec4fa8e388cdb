"""Pytest fixtures for the local Machines API (``tests/conftest.py`` star-imports this module).

- ``local_api``: process runtime, fast timings, rate limits off; yields a :class:`LocalAPIServer`
  (``.url``, ``.token``, ``.state``, ``.client()``).
- ``local_api_factory``: ``local_api_factory(runtime="sim", rate_limits="fly", faults=...)`` with
  any :class:`LocalAPIConfig` field; defaults as ``local_api``; all are closed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scaler.local.server import LocalAPIServer

__all__ = ["local_api", "local_api_factory"]

DEFAULTS: dict[str, Any] = {"runtime": "process", "timings": "fast", "rate_limits": "off"}


@pytest.fixture
def local_api_factory(tmp_path: Path) -> Iterator[Callable[..., LocalAPIServer]]:
    """Start local Machines API servers with given options; closes them all afterwards."""
    servers: list[LocalAPIServer] = []

    def make(**options: Any) -> LocalAPIServer:
        merged = {**DEFAULTS, "workdir": tmp_path / f"local-api-{len(servers)}", **options}
        server = LocalAPIServer(**merged)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def local_api(local_api_factory: Callable[..., LocalAPIServer]) -> LocalAPIServer:
    """A local Machines API: process runtime, fast timings, rate limits off."""
    return local_api_factory()
