"""The Fly clients against the local Machines API over real HTTP: every operation and the main
state flows, with real machine processes (``local_api`` fixture from scaler.local.pytest_plugin)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scaler.fly import (
    AsyncFlyClient,
    BadRequest,
    Conflict,
    FlyIOManager,
    FlyMachineConfig,
    MachineConfig,
    NotFound,
    PreconditionFailed,
    RequestTimeout,
    Unauthorized,
)
from scaler.fly.models import MachineInit

try:
    import scaler.local.pytest_plugin  # noqa: F401
except ImportError:  # pragma: no cover
    pytest.skip("the local Machines API plugin is not available", allow_module_level=True)

SLEEPER = MachineInit(exec=["python", "-c", "import time; time.sleep(3600)"])


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sleeper(**metadata: str) -> FlyMachineConfig:
    """A machine that runs until stopped."""
    return FlyMachineConfig(image="local/test:latest", init=SLEEPER, metadata=metadata or None)


@pytest.fixture
async def fly(local_api: Any) -> AsyncIterator[AsyncFlyClient]:
    async with AsyncFlyClient(local_api.token, base_url=local_api.url) as client:
        yield client


@pytest.fixture
async def app(fly: AsyncFlyClient) -> str:
    name = _name("app")
    await fly.create_app(name, "personal")
    return name


async def test_apps(fly: AsyncFlyClient) -> None:
    name = _name("app")
    created = await fly.create_app(name, "personal")
    assert created.id
    assert (await fly.get_app(name)).name == name
    assert name in [a.name for a in await fly.list_apps("personal")]
    await fly.delete_app(name, force=True)
    with pytest.raises(NotFound):
        await fly.get_app(name)


async def test_machine_lifecycle(fly: AsyncFlyClient, app: str) -> None:
    machine = await fly.create_machine(app, sleeper(pool="ci"), name="web-1", region="iad")
    assert machine.id and machine.name == "web-1"
    mid = machine.id
    reached = await fly.wait_machine(app, mid, "started", timeout=10)
    assert reached.ok is not False
    assert (await fly.get_machine(app, mid)).state == "started"

    found = await fly.list_machines(app, state=["started", "stopped"], metadata={"pool": "ci"})
    assert [m.id for m in found] == [mid]
    assert await fly.list_machines(app, metadata={"pool": "other"}) == []
    assert await fly.list_machines(app, state="stopped") == []

    version = (await fly.get_machine(app, mid)).instance_id
    await fly.stop_machine(app, mid, signal="SIGTERM", timeout=5)
    await fly.wait_machine(app, mid, "stopped", timeout=10, version=version)
    assert (await fly.get_machine(app, mid)).state == "stopped"

    started = await fly.start_machine(app, mid)
    assert started.previous_state == "stopped"
    await fly.wait_machine(app, mid, "started", timeout=10)

    await fly.restart_machine(app, mid, timeout=5, signal="SIGTERM")
    await fly.wait_machine(app, mid, "started", timeout=10)
    await fly.signal_machine(app, mid, "SIGUSR1")
    await fly.cordon_machine(app, mid)
    assert (await fly.get_machine(app, mid)).cordoned is True
    await fly.uncordon_machine(app, mid)

    events = await fly.list_events(app, mid, limit=5)
    assert 0 < len(events) <= 5 and all(e.timestamp for e in events)
    assert len(await fly.list_versions(app, mid)) >= 1

    updated = await fly.update_machine(
        app, mid, sleeper(pool="ci", v="2"), current_version=version
    )
    assert updated.instance_id != version
    with pytest.raises(Conflict):
        await fly.update_machine(app, mid, sleeper(), current_version=version)

    await fly.destroy_machine(app, mid, force=True)
    await fly.wait_machine(app, mid, "destroyed", timeout=10)
    assert await fly.list_machines(app) == []
    assert [m.id for m in await fly.list_machines(app, include_deleted=True)] == [mid]


async def test_skip_launch_then_suspend(fly: AsyncFlyClient, app: str) -> None:
    machine = await fly.create_machine(app, sleeper(), skip_launch=True)
    assert machine.id
    assert (await fly.get_machine(app, machine.id)).state == "created"
    await fly.start_machine(app, machine.id)
    await fly.wait_machine(app, machine.id, "started", timeout=10)
    await fly.suspend_machine(app, machine.id)
    await fly.wait_machine(app, machine.id, ["suspended", "stopped"], timeout=10)
    await fly.destroy_machine(app, machine.id)


async def test_leases(fly: AsyncFlyClient, app: str) -> None:
    mid = (await fly.create_machine(app, sleeper(), skip_launch=True)).id
    assert mid
    lease = await fly.acquire_lease(app, mid, ttl=30, description="scaler")
    assert lease.nonce and lease.expires_at
    assert (await fly.get_lease(app, mid)).nonce == lease.nonce
    with pytest.raises(Conflict):
        await fly.acquire_lease(app, mid, ttl=30)
    with pytest.raises(Conflict):
        await fly.cordon_machine(app, mid)
    await fly.cordon_machine(app, mid, nonce=lease.nonce)
    refreshed = await fly.refresh_lease(app, mid, lease.nonce, ttl=60)
    assert refreshed.nonce == lease.nonce
    await fly.release_lease(app, mid, lease.nonce)
    with pytest.raises(NotFound):
        await fly.get_lease(app, mid)


async def test_create_with_a_lease(fly: AsyncFlyClient, app: str) -> None:
    machine = await fly.create_machine(app, sleeper(), skip_launch=True, lease_ttl=30)
    assert machine.id and machine.nonce
    with pytest.raises(Conflict):
        await fly.destroy_machine(app, machine.id, force=True)
    await fly.destroy_machine(app, machine.id, force=True, nonce=machine.nonce)


async def test_metadata(fly: AsyncFlyClient, app: str) -> None:
    machine = await fly.create_machine(app, sleeper(pool="ci"), skip_launch=True)
    mid = machine.id
    assert mid
    await fly.set_metadata_key(app, mid, "job", "j-1")
    assert await fly.get_metadata_key(app, mid, "job") == "j-1"
    assert await fly.get_metadata(app, mid) == {"pool": "ci", "job": "j-1"}
    version = (await fly.get_machine(app, mid)).instance_id
    await fly.update_metadata(app, mid, {"pool": "gpu"}, machine_version=version)
    assert (await fly.get_metadata(app, mid))["pool"] == "gpu"
    with pytest.raises(PreconditionFailed):
        await fly.update_metadata(app, mid, {"pool": "x"}, machine_version="01STALE0000000")
    await fly.delete_metadata_key(app, mid, "pool")
    with pytest.raises(NotFound):
        await fly.get_metadata_key(app, mid, "pool")


async def test_volumes(fly: AsyncFlyClient, app: str) -> None:
    volume = await fly.create_volume(app, "data", region="iad", size_gb=1)
    vid = volume.id
    assert vid and volume.size_gb == 1
    assert [v.id for v in await fly.list_volumes(app)] == [vid]
    assert (await fly.get_volume(app, vid)).name == "data"
    assert (await fly.update_volume(app, vid, snapshot_retention=10)).snapshot_retention == 10
    extended = await fly.extend_volume(app, vid, 2)
    assert extended.volume is not None and extended.volume.size_gb == 2
    await fly.create_snapshot(app, vid)
    assert len(await fly.list_snapshots(app, vid)) >= 1
    assert (await fly.delete_volume(app, vid)).state in ("destroyed", "pending_destroy")


async def test_regions(fly: AsyncFlyClient) -> None:
    regions = await fly.list_regions()
    assert "iad" in [r.code for r in regions.regions]


async def test_errors(fly: AsyncFlyClient, app: str, local_api: Any) -> None:
    with pytest.raises(NotFound) as missing:
        await fly.get_machine(app, "0000000000dead")
    assert missing.value.error and missing.value.action == "Machines_show"
    with pytest.raises(BadRequest):
        await fly.create_machine(app, FlyMachineConfig(env={"A": "1"}))
    mid = (await fly.create_machine(app, sleeper())).id
    assert mid
    await fly.wait_machine(app, mid, "started", timeout=10)
    version = (await fly.get_machine(app, mid)).instance_id
    with pytest.raises(RequestTimeout):
        await fly.wait_machine(app, mid, "stopped", timeout=1, version=version)
    async with AsyncFlyClient("wrong-token", base_url=local_api.url) as stranger:
        with pytest.raises(Unauthorized):
            await stranger.list_machines(app)
    await fly.destroy_machine(app, mid, force=True)


def test_the_sync_manager_quick_start(local_api: Any) -> None:
    with FlyIOManager(api_token=local_api.token, base_url=local_api.url) as manager:
        name = _name("web")
        assert manager.create_app(name).id
        web = manager.launch_web_app(name, "local/test:latest", port=3000, region="iad",
                                     cpus=1, memory_mb=512)
        assert web.config is not None and web.config.services is not None
        assert web.config.services[0].internal_port == 3000
        volume = manager.create_volume(name, "data", size_gb=1, region="iad")
        assert volume.name == "data"
        worker = manager.create_machine(name, MachineConfig(
            image="local/test:latest", name="worker", cpus=2, memory_mb=1024,
            cmd=["python", "-c", "import time; time.sleep(3600)"], restart_policy="always",
        ))
        assert worker.name == "worker"
        for machine in manager.client.list_machines(name):
            assert machine.id
            manager.client.destroy_machine(name, machine.id, force=True)


def test_the_quick_start_mounts_a_volume_by_name(local_api: Any) -> None:
    """The quick start's storage example as written: the mount names the volume; Fly wants its
    id, so the manager looks it up (in the machine's region, or where the volume is)."""
    with FlyIOManager(api_token=local_api.token, base_url=local_api.url) as manager:
        name = _name("db")
        manager.create_app(name)
        volume = manager.create_volume(app_name=name, volume_name="data", size_gb=10,
                                       region="iad")
        config = MachineConfig(
            image="postgres:15", name="database", cpus=2, memory_mb=2048,
            mounts=[{"volume": "data", "path": "/var/lib/postgresql/data"}],
            env={"POSTGRES_PASSWORD": "secret"},
        )
        db = manager.create_machine(name, config)
        assert db.region == "iad"
        assert db.config is not None and db.config.mounts is not None
        assert db.config.mounts[0].volume == volume.id

        with pytest.raises(ValueError, match=r"no volume named 'logs' in app .*create it first"):
            manager.create_machine(name, MachineConfig(
                image="local/test:latest", mounts=[{"volume": "logs", "path": "/logs"}]))
        manager.create_volume(app_name=name, volume_name="data", size_gb=1, region="ams")
        with pytest.raises(ValueError, match=r"2 volumes named 'data' .* or a region"):
            manager.create_machine(name, MachineConfig(
                image="local/test:latest", mounts=[{"volume": "data", "path": "/d"}]))
        for machine in manager.client.list_machines(name):
            assert machine.id
            manager.client.destroy_machine(name, machine.id, force=True)
