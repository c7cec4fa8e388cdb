"""Machine templates and views: job sizes, and which listed machines are ours."""

from __future__ import annotations

from typing import Any

import pytest

from scaler.config import PoolSpec
from scaler.fly.models import Guest, Machine
from scaler.jobs.claims import Claim
from scaler.loop.claimview import check_options
from scaler.loop.machines import META_POOL, META_SCALER, job_guest, machine_view
from tests.scaler_harness import make_settings


@pytest.fixture
def pool() -> PoolSpec:
    settings = make_settings(api_url="http://x", token="t", redis_url="redis://127.0.0.1:6379/0",
                             namespace="n", prefix="p", app="app", queue="q",
                             extra_pool={"size": "performance-2x"})
    return settings.pools[0]


def _guest(pool: PoolSpec, options: dict[str, Any] | None) -> Guest | str:
    """The guest of a job whose message carries ``options``, or why it can have none."""
    message = {"options": {} if options is None else {"fly_machine": options}}
    claim = Claim("r1", "jobs", "q", "m1", 1, 0, "jobs-r1-1", message=message)
    checked, error = check_options(claim)
    return error if error is not None else job_guest(pool, checked)


def test_a_job_size_comes_from_the_pool_unless_the_message_names_one(pool: PoolSpec) -> None:
    guest = _guest(pool, None)
    assert isinstance(guest, Guest)
    assert (guest.cpu_kind, guest.cpus, guest.memory_mb) == ("performance", 2, 4096)
    # a message that only picks a region keeps the pool's size
    assert _guest(pool, {"region": "ord"}) == guest
    own = _guest(pool, {"cpus": 2, "memory_mb": 1024})
    assert isinstance(own, Guest)
    assert (own.cpu_kind, own.cpus, own.memory_mb) == ("shared", 2, 1024)
    refused = _guest(pool, {"cpus": 1, "memory_mb": 300})
    assert isinstance(refused, str) and "fly_machine.memory_mb" in refused


def test_only_machines_with_our_scaler_id_are_viewed(pool: PoolSpec) -> None:
    pools = {"jobs": pool}
    ours = Machine.model_validate({"id": "m1", "name": "n", "state": "started", "config": {
        "metadata": {META_SCALER: "fly-scaler", META_POOL: "jobs"}}})
    other = Machine.model_validate({"id": "m2", "name": "n2", "state": "started", "config": {
        "metadata": {META_SCALER: "someone-else", META_POOL: "jobs"}}})
    view = machine_view(ours, "app", "fly-scaler", pools)
    assert view is not None and view.pool == "jobs"
    assert machine_view(other, "app", "fly-scaler", pools) is None
    # our id, but a pool that is not configured on this app: ours, pool unknown (an orphan)
    elsewhere = machine_view(ours, "other-app", "fly-scaler", pools)
    assert elsewhere is not None and elsewhere.pool is None
