"""Warm per-job slots end to end: real Redis, the local Machines API running real processes, the
scaler service, and the runner finding its job by machine id on a started slot."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.world import World
from tests.scaler_harness import ScalerHarness, eventually

pytestmark = pytest.mark.e2e


def _slots(w: World) -> list[dict[str, Any]]:
    return [m for m in w.machines() if "fly_scaler_slot" in m["config"].get("metadata", {})]


def _idle_slots(w: World, n: int) -> list[dict[str, Any]] | None:
    found = [m for m in _slots(w) if m["state"] in ("created", "stopped")]
    return found if len(found) == n else None


def _scaler_idle_slot_ids(harness: ScalerHarness) -> set[str]:
    """The slots the scaler's last listing shows idle (what its next plan may bind a job to)."""
    assert harness.service is not None
    listings = harness.service.reconciler.observer._listings.values()
    return {v.id for listing in listings for v in listing.views
            if v.slot is not None and v.state in ("created", "stopped")}


def _scaler_sees_idle_slots(harness: ScalerHarness, n: int) -> bool:
    """Whether the scaler's last listing shows ``n`` idle slots (so a job goes to one)."""
    return len(_scaler_idle_slot_ids(harness)) == n


def test_jobs_run_on_warm_slots_one_after_another_in_a_fresh_root(world: World) -> None:
    w = world
    key = f"{w.ns}:traces"
    # A cap of 2 with 2 slots: a job never waits for a create while a slot is about to be free
    # (the listing may still show it started), so every job must run on a slot.
    harness = ScalerHarness(w.settings(max_machines=2, extra_pool={"warm_slots": 2})).start()
    try:
        slots = eventually(lambda: _idle_slots(w, 2), timeout=30, what="two warm slots")
        ids = {m["id"] for m in slots}
        for m in slots:
            assert not m["config"]["auto_destroy"]
            assert m["config"]["restart"]["policy"] == "no"
            assert "FLY_SCALER_MESSAGE" not in m["config"]["env"]
        for i in range(6):
            w.enqueue("leave_traces", key, f"secret-{i}")
        eventually(lambda: w.r.llen(key) >= 6, timeout=60, what="every job ran")
        eventually(lambda: _idle_slots(w, 2), timeout=30, what="the slots stopped again")
    finally:
        harness.stop()
    traces = w.values(key)
    assert len(traces) == 6  # each job exactly once
    hosts = [t.split(":", 1)[0] for t in traces]
    everything = w.machines(include_deleted=True)
    # no machine but slots was ever created (a slot replaced under load is still a slot) ...
    assert all("fly_scaler_slot" in m["config"]["metadata"] for m in everything)
    assert set(hosts) <= {m["id"] for m in everything}
    assert ids & set(hosts)
    # ... slots ran one job after another ...
    assert max(hosts.count(h) for h in hosts) >= 2
    # ... and every job found a fresh root: nothing of the job before it on that slot
    assert all(t.split(":", 1)[1] == "" for t in traces), traces


def test_a_slot_killed_mid_job_loses_nothing(world: World) -> None:
    w = world
    key = f"{w.ns}:kill"
    harness = ScalerHarness(w.settings(max_machines=2, extra_pool={"warm_slots": 1})).start()
    try:
        (first,) = eventually(lambda: _idle_slots(w, 1), timeout=30, what="a warm slot")
        eventually(lambda: _scaler_sees_idle_slots(harness, 1), timeout=30,
                   what="the scaler sees the slot")
        w.enqueue("sleeper", key, 5.0)
        eventually(lambda: w.values(key) == ["start"], timeout=30, what="the job started")
        r = w.api.post(f"/_admin/apps/{w.app}/machines/{first['id']}/exit",
                       json={"exit_code": 137})
        assert r.status_code < 300, r.text
        eventually(lambda: w.values(key).count("done") == 1, timeout=60,
                   what="the job ran again to its end")
        eventually(lambda: [m for m in _idle_slots(w, 1) or () if m["id"] != first["id"]],
                   timeout=30, what="the dead slot replaced")
    finally:
        harness.stop()
    assert w.values(key) == ["start", "start", "done"]
    gone = [m for m in w.machines(include_deleted=True) if m["id"] == first["id"]]
    assert gone and gone[0]["state"] in ("destroying", "destroyed")


def test_a_template_change_replaces_the_slots(world: World) -> None:
    w = world
    key = f"{w.ns}:tmpl"
    harness = ScalerHarness(w.settings(extra_pool={"warm_slots": 2})).start()
    try:
        old = {m["id"] for m in eventually(lambda: _idle_slots(w, 2), timeout=30,
                                           what="two warm slots")}
    finally:
        harness.stop()
    settings = w.settings(extra_pool={"warm_slots": 2, "metadata": {"release": "2"}})
    harness = ScalerHarness(settings).start()
    try:
        new = eventually(
            lambda: (s := _idle_slots(w, 2)) and not ({m["id"] for m in s} & old) and s,
            timeout=30, what="two slots of the new template")
        # The API shows them stopped before the scaler's listing does (it is refreshed as the
        # list budget allows, and a loaded host lags further): a job enqueued while the scaler
        # still sees them booting gets a machine of its own, rightly. Wait for the scaler's view.
        new_ids = {m["id"] for m in new}
        eventually(lambda: _scaler_idle_slot_ids(harness) == new_ids, timeout=30,
                   what="the scaler sees the new slots idle, and no old one")
        w.enqueue("record", key, "after")
        eventually(lambda: w.r.llen(key) >= 1, timeout=30, what="the job ran")
    finally:
        harness.stop()
    (value,) = w.values(key)
    assert value.split("@")[1] not in old  # never on an old slot ...
    assert value.split("@")[1] in new_ids  # ... but on a new one
    states = {m["id"]: m["state"] for m in w.machines(include_deleted=True)}
    assert all(states[i] in ("destroying", "destroyed") for i in old)


def test_a_job_with_its_own_size_gets_its_own_machine_not_a_slot(world: World) -> None:
    w = world
    key = f"{w.ns}:sized"
    harness = ScalerHarness(w.settings(extra_pool={"warm_slots": 1})).start()
    try:
        (only,) = eventually(lambda: _idle_slots(w, 1), timeout=30, what="a warm slot")
        eventually(lambda: _scaler_sees_idle_slots(harness, 1), timeout=30,
                   what="the scaler sees the slot")
        w.enqueue("record", key, "big", fly_machine={"cpus": 2, "memory_mb": 1024})
        eventually(lambda: w.r.llen(key) >= 1, timeout=30, what="the sized job ran")
    finally:
        harness.stop()
    others = [m for m in w.machines(include_deleted=True) if m["id"] != only["id"]]
    assert len(others) == 1  # created for the job, with the job's size
    assert w.values(key) == [f"big@{others[0]['id']}"]
    assert others[0]["config"]["guest"]["cpus"] == 2
    assert "fly_scaler_slot" not in others[0]["config"].get("metadata", {})
