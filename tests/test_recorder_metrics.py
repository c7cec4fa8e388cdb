"""The per-tick recorder aggregates machines per label set before touching a metric: the exported
values must be the per-machine sums (machines by pool and state, started seconds and cost by pool
and size, each machine priced at its own memory)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from scaler.loop.machines import caps_of, pool_policy
from scaler.loop.observe import Observer
from scaler.loop.spend import machine_rates
from scaler.policy.actions import Plan
from scaler.policy.types import MachineView, Observation, QueueView
from scaler.telemetry.costs import price_per_second
from scaler.telemetry.metrics import Metrics
from scaler.telemetry.recorder import TickRecorder
from tests.scaler_harness import make_settings

B_PRICE = 2e-5
"""Pool b's own price (USD per second): what a machine of b without a size label costs."""


def _recorder() -> tuple[TickRecorder, Metrics]:
    pools = [
        {"name": name, "mode": "worker", "app": "app", "queues": [f"q-{name}"],
         "image": "local/test:latest", "max_machines": 10}
        for name in ("a", "b")
    ]
    settings = make_settings(api_url="http://x", token="t", redis_url="redis://127.0.0.1:6379/0",
                             namespace="n", prefix="p", app="app", queue="q", pools=pools)
    metrics = Metrics()
    # What record() reads of the observer: its apps, what it could not read, the pools' prices.
    observer = SimpleNamespace(apps=("app",), unknown={}, prices={"a": 0.0, "b": B_PRICE},
                               listings_taken={})
    recorder = TickRecorder(
        settings, aioredis.Redis.from_url("redis://127.0.0.1:6379/0"), metrics,
        cast(Any, None), tuple(pool_policy(p, settings) for p in settings.pools),
        caps_of(settings), cast(Observer, observer),
    )
    return recorder, metrics


def _m(mid: str, pool: str | None, state: str, size: str = "", memory_mb: int = 0
       ) -> MachineView:
    return MachineView(id=mid, name=mid, app="app", pool=pool, state=state, size=size,
                       memory_mb=memory_mb)


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_machine_counts_seconds_and_cost_are_the_per_machine_sums() -> None:
    recorder, metrics = _recorder()
    first = (
        _m("a1", "a", "started", "shared-cpu-1x", 256),
        _m("a2", "a", "started", "shared-cpu-1x", 2048),  # same label, more memory: dearer
        _m("a6", "a", "started", "shared-cpu-1x", 256),  # the same label set as a1
        _m("a3", "a", "started", "performance-2x", 4096),
        _m("a4", "a", "stopped", "shared-cpu-1x", 256),
        _m("b1", "b", "started", "", 0),  # no size: its pool's price, under shared-cpu-1x
        _m("x1", None, "started", "shared-cpu-1x", 256),
        _m("gone", "b", "started", "shared-cpu-1x", 256),
    )
    recorder.record(Observation(now=100.0, machines_by_app={"app": first}), Plan(), True)
    assert _value(metrics, "fly_scaler_machine_seconds_total", pool="a",
                  size="shared-cpu-1x") in (None, 0.0)  # first sight: nothing accrued yet
    assert _value(metrics, "fly_scaler_machines", pool="a", state="started") == 4
    assert _value(metrics, "fly_scaler_machines", pool="b", state="started") == 2

    second = (
        *[m for m in first if m.id not in ("gone", "a4")],
        _m("a5", "a", "started", "shared-cpu-1x", 256),  # new: accrues from the next tick on
        _m("b2", "b", "starting", "shared-cpu-1x", 256),
    )
    recorder.record(Observation(now=110.0, machines_by_app={"app": second}), Plan(), True)

    expected: dict[tuple[str, str], tuple[float, float]] = {}
    for m in first:
        if m.id in ("gone", "a4") or m.state != "started":
            continue
        label = m.size or "shared-cpu-1x"
        # priced as the budgets' ledger prices it (machine_rates), the same rule
        (rate,) = [r for mv, r in machine_rates([m], {}, {"b": B_PRICE})] or [0.0]
        assert rate == (price_per_second(m.size, m.memory_mb) if m.size else
                        B_PRICE if m.pool == "b" else 0.0)
        seconds, cost = expected.get((m.pool or "(unknown)", label), (0.0, 0.0))
        expected[(m.pool or "(unknown)", label)] = (seconds + 10.0, cost + 10.0 * rate)
    assert len(expected) == 4
    for (pool, size), (seconds, cost) in expected.items():
        assert _value(metrics, "fly_scaler_machine_seconds_total", pool=pool, size=size) == (
            pytest.approx(seconds)), (pool, size)
        assert _value(metrics, "fly_scaler_estimated_cost_usd_total", pool=pool, size=size) == (
            pytest.approx(cost)), (pool, size)
    # the memory each machine has is its own price: a wrong aggregate would price both at one
    assert price_per_second("shared-cpu-1x", 2048) > price_per_second("shared-cpu-1x", 256)

    counts = {("a", "started"): 5, ("b", "started"): 1, ("b", "starting"): 1,
              ("(unknown)", "started"): 1}
    for (pool, state), n in counts.items():
        assert _value(metrics, "fly_scaler_machines", pool=pool, state=state) == n
    # a (pool, state) no machine is in any more is gone from the export, not left at its count
    assert _value(metrics, "fly_scaler_machines", pool="a", state="stopped") is None


def test_queue_gauges_follow_every_change_and_keep_unchanged_values() -> None:
    recorder, metrics = _recorder()

    def tick(now: float, ready: int, age: float | None) -> None:
        view = QueueView(name="q-a", ready=ready, delayed=1, in_flight=2, dead=0, claimed=0,
                         oldest_ready_age_s=age)
        recorder.record(Observation(now=now, queues={"q-a": view, "q-b": None}), Plan(), True)

    tick(1.0, 5, 3.0)
    tick(2.0, 5, 4.0)
    assert _value(metrics, "fly_scaler_queue_messages", queue="q-a", state="ready") == 5
    assert _value(metrics, "fly_scaler_queue_messages", queue="q-a", state="in_flight") == 2
    assert _value(metrics, "fly_scaler_queue_oldest_ready_age_seconds", queue="q-a") == 4.0
    tick(3.0, 0, None)
    assert _value(metrics, "fly_scaler_queue_messages", queue="q-a", state="ready") == 0
    assert _value(metrics, "fly_scaler_queue_oldest_ready_age_seconds", queue="q-a") == 0.0


def test_listing_age_per_app_and_gone_while_the_listing_is_unknown() -> None:
    recorder, metrics = _recorder()
    observer = cast(Any, recorder.observer)
    observer.listings_taken = {"app": 99.25, "claimed-in": 100.0}
    recorder.record(Observation(now=100.0, machines_by_app={"app": ()}), Plan(), True)
    assert _value(metrics, "fly_scaler_listing_age_seconds", app="app") == 0.75
    assert _value(metrics, "fly_scaler_listing_age_seconds", app="claimed-in") == 0.0

    observer.listings_taken = {"claimed-in": 100.5}  # "app" could not be listed this tick
    recorder.record(Observation(now=101.0, machines_by_app={"app": None}), Plan(), True)
    assert _value(metrics, "fly_scaler_listing_age_seconds", app="app") is None
    assert _value(metrics, "fly_scaler_listing_age_seconds", app="claimed-in") == 0.5
