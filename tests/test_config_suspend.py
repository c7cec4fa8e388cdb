"""Configuration of the suspended tier (``warm_suspended``): worker pools only, within the cap,
and only for machines Fly can suspend."""

from __future__ import annotations

from typing import Any

import pytest

from scaler.config import ConfigError, parse_settings
from scaler.loop.machines import pool_policy, worker_request


def pool(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "w", "mode": "worker", "app": "w-app", "queues": ["w"], "image": "i",
    }
    base.update(kw)
    return base


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, {})
    return info.value.problems


def test_warm_suspended_reaches_the_planner_and_the_worker() -> None:
    s = parse_settings({"pools": [pool(warm_suspended=2)]}, {})
    assert pool_policy(s.pools[0], s).warm_suspended == 2
    assert "warm_suspended=2" in s.describe()
    env = worker_request(s.pools[0], s).config.env or {}
    assert env.get("FLY_SCALER_SUSPEND_IDLE") == "1"
    plain = parse_settings({"pools": [pool()]}, {})
    assert "FLY_SCALER_SUSPEND_IDLE" not in (worker_request(plain.pools[0], plain).config.env
                                             or {})


def test_per_job_pools_refuse_it_saying_why() -> None:
    (found,) = problems({"pools": [pool(mode="per-job", warm_suspended=1)]})
    assert found.startswith("pools[0].warm_suspended: 'warm_suspended' applies to worker pools")
    assert "memory" in found and 'mode = "worker"' in found


def test_above_the_pool_cap() -> None:
    (found,) = problems({"pools": [pool(max_machines=2, warm_suspended=3)]})
    assert found == "pools[0].warm_suspended: 3 is above max_machines = 2; lower it"


def test_machines_too_large_to_suspend() -> None:
    (found,) = problems({"pools": [pool(size="performance-2x", warm_suspended=1)]})
    assert found.startswith("pools[0].warm_suspended: Fly suspends machines of at most 2048 MB")
    assert "warm_machines" in found
    parse_settings({"pools": [pool(size="shared-cpu-2x", guest={"memory_mb": 2048},
                                   warm_suspended=1)]}, {})
    # Without a suspended tier any size is fine.
    parse_settings({"pools": [pool(size="performance-2x")]}, {})


def test_negative() -> None:
    found = problems({"pools": [pool(warm_suspended=-1)]})
    assert any(p.startswith("pools[0].warm_suspended") for p in found), found
