"""Shared fixtures: a real Redis (the one at REDIS_URL, or a private redis-server) with a key prefix
per test, so tests cannot see each other's data."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio
import structlog
from dramatiq.brokers.redis import RedisBroker

from scaler.jobs.claims import ClaimStore
from scaler.local.pytest_plugin import *  # noqa: F403  (the local Machines API fixtures)
from scaler.local.testing import free_port

# A fixture module the test modules also import from: rewrite its asserts before they do.
pytest.register_assert_rewrite("tests.github_world")


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis URL that answers: REDIS_URL (default 127.0.0.1:6379), or a private redis-server."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if _answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        message = "no Redis answers at REDIS_URL and redis-server is not installed"
        if os.environ.get("CI"):  # .ci/run installs it: half a suite skipped is not green
            pytest.fail(message + " (CI is set: .ci/setup should have installed redis-server)")
        pytest.skip(message)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("private redis-server did not start")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client(redis_url: str, redis_prefix: str) -> Iterator[redis.Redis]:
    """A synchronous client on the test Redis (use keys under ``redis_prefix``)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts with structlog's defaults: a test that configures logging (a level filter,
    JSON output) must not change what ``capture_logs`` sees in the next one."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def ns(redis_prefix: str) -> str:
    """A dramatiq namespace under this test's key prefix."""
    return f"{redis_prefix}-ns"


@pytest.fixture
def broker(redis_url: str, ns: str) -> Iterator[RedisBroker]:
    """A dramatiq RedisBroker on the test Redis, in the test's namespace."""
    b = RedisBroker(url=redis_url, namespace=ns)  # type: ignore[no-untyped-call]
    yield b
    b.client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client on the test Redis (use keys under ``redis_prefix``)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def store(aredis: redis.asyncio.Redis, redis_prefix: str) -> ClaimStore:
    """The scaler's claim store in this test's namespace and prefix."""
    return ClaimStore(aredis, namespace=f"{redis_prefix}-ns", prefix=redis_prefix)
