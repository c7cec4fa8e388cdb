"""Pytest fixtures for the local GitHub stand-in. A test module enables them with
``pytest_plugins = ["scaler.github.pytest_plugin"]``.

- ``github_app_key``: a throwaway RSA key made for the session
  (:class:`~scaler.github.testing.AppKey`: ``.private_pem``, ``.public``).
- ``github_api_factory``: ``github_api_factory(clock=..., path_prefix="/api/v3", ...)`` starts a
  :class:`~scaler.github.local_server.LocalGitHubServer` checking JWTs against that key, with any
  of its keyword options (defaults: App id ``"1"``, installation ``1``); all closed at teardown.
- ``github_api``: one with the defaults.
- ``github_clock``: a :class:`~scaler.github.testing.FakeClock`: give it and its ``sleep`` to
  the client, and it to the stand-in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scaler.github.local_server import LocalGitHubServer
from scaler.github.testing import AppKey, FakeClock, make_app_key

__all__ = ["github_api", "github_api_factory", "github_app_key", "github_clock"]


@pytest.fixture(scope="session")
def github_app_key() -> AppKey:
    """One throwaway App key for the session (generating one takes a moment)."""
    return make_app_key()


@pytest.fixture
def github_api_factory(github_app_key: AppKey) -> Iterator[Callable[..., LocalGitHubServer]]:
    """Start local GitHub stand-ins with given options; closes them all afterwards."""
    servers: list[LocalGitHubServer] = []

    def make(**options: Any) -> LocalGitHubServer:
        server = LocalGitHubServer(options.pop("public_key", github_app_key.public), **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def github_clock() -> FakeClock:
    """A fake wall clock for the client and the stand-in."""
    return FakeClock()


@pytest.fixture
def github_api(github_api_factory: Callable[..., LocalGitHubServer]) -> LocalGitHubServer:
    """A local GitHub stand-in with the defaults (App ``"1"``, installation ``1``)."""
    return github_api_factory()
