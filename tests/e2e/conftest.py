"""Fixtures of the end-to-end tests: a :class:`~tests.e2e.world.World` per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scaler.local.server import LocalAPIServer
from tests.e2e.world import World, open_world


@pytest.fixture
def world_on(redis_url: str, redis_prefix: str) -> Iterator[Callable[..., World]]:
    """Opens worlds on given servers (``world_on(server, create=...)``); closes them afterwards."""
    opened: list[World] = []

    def open_on(server: LocalAPIServer, **options: Any) -> World:
        w = open_world(server, redis_url, redis_prefix, **options)
        opened.append(w)
        return w

    yield open_on
    for w in opened:
        w.close()


@pytest.fixture
def world(local_api: LocalAPIServer, world_on: Callable[..., World]) -> World:
    """A world on the default local Machines API."""
    return world_on(local_api)
