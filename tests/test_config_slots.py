"""The warm slot keys of a per-job pool, as check-config reports them."""

from __future__ import annotations

from scaler.config import parse_settings
from tests.test_config import one_problem, pool


def test_slot_keys_parse() -> None:
    s = parse_settings({"pools": [pool(warm_slots=4, slot_max_jobs=100, slot_max_age="6h")]}, {})
    p = s.pools[0]
    assert (p.warm_slots, p.slot_max_jobs, p.slot_max_age) == (4, 100, 21600.0)
    assert parse_settings({"pools": [pool()]}, {}).pools[0].warm_slots == 0


def test_warm_slots_above_the_pool_cap() -> None:
    text = one_problem({"pools": [pool(warm_slots=11, max_machines=10)]})
    assert text.startswith("pools[0].warm_slots: 11 is above max_machines = 10; lower it")


def test_slots_on_a_worker_pool() -> None:
    text = one_problem({"pools": [pool(mode="worker", warm_slots=2)]})
    assert "pools[0].warm_slots: 'warm_slots' applies to per-job pools only" in text


def test_slot_limits_without_slots_and_bad_values() -> None:
    text = one_problem({"pools": [pool(slot_max_jobs=10)]})
    assert "pools[0].slot_max_jobs: 'slot_max_jobs' only applies with warm_slots > 0" in text
    assert "warm_slots" in one_problem({"pools": [pool(warm_slots=-1)]})
    assert "slot_max_jobs" in one_problem({"pools": [pool(warm_slots=1, slot_max_jobs=0)]})
    assert "slot_max_age" in one_problem({"pools": [pool(warm_slots=1, slot_max_age="0s")]})
