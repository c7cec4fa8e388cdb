"""The spend ledger against real Redis: accrual from listings, the rolling hour on a fake clock,
a restarted scaler (a new ledger object) keeping the hour, and no double count by two replicas."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from scaler.loop.spend import SpendLedger, machine_rates
from scaler.policy.types import MachineView

T0 = 1_800_000_000.0  # a whole minute
RATE = 0.01  # USD per second


def started(mid: str, pool: str = "a", app: str = "app-a", at: float = T0 - 1000) -> MachineView:
    return MachineView(mid, mid, app, pool, "started", started_at=at)


async def tick(ledger: SpendLedger, now: float, *machines: MachineView) -> float:
    return await ledger.accrue(now, [(m, RATE) for m in machines], {"a": "app-a"})


async def test_accrues_price_times_time_per_scope(
    aredis: redis.asyncio.Redis, redis_prefix: str
) -> None:
    ledger = SpendLedger(aredis, redis_prefix)
    assert await tick(ledger, T0, started("m1")) == 0.0  # the first accrual only starts the clock
    m2 = started("m2", "b", "app-b", at=T0 + 5)  # started after the last accrual: from then on
    assert await tick(ledger, T0 + 10, started("m1"), m2) == pytest.approx(0.15)
    spend = await ledger.read(T0 + 10, {"a": RATE})
    assert spend.total == pytest.approx(0.15)
    assert dict(spend.by_pool) == pytest.approx({"a": 0.1, "b": 0.05})
    assert dict(spend.by_app) == pytest.approx({"app-a": 0.1, "app-b": 0.05})
    assert dict(spend.price_per_s) == {"a": RATE}


async def test_rolling_hour_forgets_spend_older_than_an_hour(
    aredis: redis.asyncio.Redis, redis_prefix: str
) -> None:
    ledger = SpendLedger(aredis, redis_prefix)
    await tick(ledger, T0)
    await tick(ledger, T0 + 30, started("m1"))  # 0.30 in minute 0
    await tick(ledger, T0 + 90)  # nothing started: the clock moves, no spend
    await tick(ledger, T0 + 120, started("m1", at=T0 + 100))  # 0.20 in minute 2
    assert (await ledger.read(T0 + 3599, {})).total == pytest.approx(0.5)
    assert (await ledger.read(T0 + 3600, {})).total == pytest.approx(0.2)  # minute 0 rolled out
    assert (await ledger.read(T0 + 3720, {})).total == 0.0


async def test_a_restarted_scaler_keeps_the_hour_and_accrues_the_gap(
    aredis: redis.asyncio.Redis, redis_prefix: str
) -> None:
    first = SpendLedger(aredis, redis_prefix)
    await tick(first, T0)
    await tick(first, T0 + 60, started("m1"))
    second = SpendLedger(aredis, redis_prefix)  # a new process: nothing kept in memory
    assert (await second.read(T0 + 61, {})).total == pytest.approx(0.6)
    # it was down for ten minutes; the machine listed now ran all that time
    assert await tick(second, T0 + 660, started("m1")) == pytest.approx(6.0)
    # a gap longer than the hour is accrued for the hour only
    assert await tick(second, T0 + 660 + 7200, started("m1")) == pytest.approx(36.0)


async def test_two_replicas_never_count_the_same_seconds_twice(
    aredis: redis.asyncio.Redis, redis_prefix: str
) -> None:
    a, b = SpendLedger(aredis, redis_prefix), SpendLedger(aredis, redis_prefix)
    await tick(a, T0)
    added = await asyncio.gather(*(tick(x, T0 + 10, started("m1")) for x in (a, b, a, b)))
    assert sum(added) == pytest.approx(0.1)
    assert await tick(b, T0 + 5, started("m1")) == 0.0  # a replica whose clock is behind
    assert (await a.read(T0 + 10, {})).total == pytest.approx(0.1)


def test_only_started_machines_with_a_price_count() -> None:
    ms = [
        MachineView("x", "x", "app-a", "a", "started", size="shared-cpu-1x"),
        MachineView("y", "y", "app-a", "a", "stopped", size="shared-cpu-1x"),
        MachineView("z", "z", "app-a", "a", "started"),  # no size: its pool's price
        MachineView("u", "u", "app-a", "gone", "started"),  # no size, no pool price: not counted
    ]
    rates = machine_rates(ms, {"shared-cpu-1x": 0.5}, {"a": 0.25})
    assert [(m.id, r) for m, r in rates] == [("x", 0.5), ("z", 0.25)]
