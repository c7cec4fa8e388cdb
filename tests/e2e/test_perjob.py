"""Per-job dispatch end to end: real Redis, the local Machines API running real processes, the
scaler service, and `python -m workers.runner` inside each machine."""

from __future__ import annotations

import pytest

from tests.e2e.world import World
from tests.scaler_harness import ScalerHarness, eventually

pytestmark = pytest.mark.e2e


def test_jobs_run_once_each_on_dedicated_machines(world: World) -> None:
    w = world
    out_key = f"{w.ns}:out"
    n = 6
    for i in range(n):
        w.enqueue("record", out_key, f"job{i}")
    harness = ScalerHarness(w.settings(max_machines=3)).start()
    try:
        done = eventually(lambda: w.values(out_key) if
                          w.r.llen(out_key) >= n else None, timeout=60, what="all jobs ran")
        eventually(lambda: not w.machines(), timeout=30, what="no machine left")
        assert harness.service is not None
        reg = harness.service.metrics.registry
        eventually(lambda: reg.get_sample_value("fly_scaler_jobs_finished_total",
                                                {"pool": "jobs", "outcome": "done"}) == n,
                   timeout=10, what="the runners' job events reached the metrics")
        assert reg.get_sample_value("fly_scaler_enqueue_to_started_seconds_count",
                                    {"pool": "jobs"}) == n
        assert reg.get_sample_value("fly_scaler_job_run_seconds_count", {"pool": "jobs"}) == n
        assert reg.get_sample_value("fly_scaler_launches_total",
                                    {"pool": "jobs", "result": "created"}) == n
    finally:
        harness.stop()
    values = sorted(v.split("@")[0] for v in done)
    assert values == sorted(f"job{i}" for i in range(n))  # each exactly once
    hosts = [v.split("@")[1] for v in done]
    assert len(set(hosts)) == n  # one machine per job
    all_machines = w.machines(include_deleted=True)
    assert len(all_machines) == n
    assert all(m["config"]["auto_destroy"] for m in all_machines)


class _MaxLive:
    """Samples the app's live machines in a thread and keeps the maximum seen."""

    def __init__(self, world: World) -> None:
        import threading

        self.max = 0
        self._stop = threading.Event()
        self._world = world
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            live = [m for m in self._world.machines() if m["state"] not in
                    ("destroyed", "destroying")]
            self.max = max(self.max, len(live))
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.max


def test_cap_holds_throughout(world: World) -> None:
    w = world
    out_key = f"{w.ns}:slow"
    for _i in range(6):
        w.enqueue("sleeper", out_key, 0.4)
    sampler = _MaxLive(w)
    harness = ScalerHarness(w.settings(max_machines=2)).start()
    try:
        eventually(lambda: w.values(out_key).count("done") == 6, timeout=60,
                   what="all sleepers done")
    finally:
        harness.stop()
        seen = sampler.stop()
    assert 1 <= seen <= 2


def test_jobs_with_their_own_size_get_that_size(world: World) -> None:
    w = world
    key = f"{w.ns}:sized"
    w.enqueue("record", key, "plain")
    w.enqueue("record", key, "big", fly_machine={"cpus": 2, "memory_mb": 1024})
    harness = ScalerHarness(w.settings()).start()
    try:
        eventually(lambda: w.r.llen(key) >= 2, timeout=60, what="both jobs ran")
    finally:
        harness.stop()
    guests = sorted(
        (m["config"]["guest"]["cpus"], m["config"]["guest"]["memory_mb"])
        for m in w.machines(include_deleted=True)
    )
    assert guests == [(1, 256), (2, 1024)]


def test_invalid_machine_options_dead_letter_the_job_not_the_queue(world: World) -> None:
    w = world
    key = f"{w.ns}:after"
    w.enqueue("record", key, "bad", fly_machine={"cpus": 3, "memory_mb": 300})
    w.enqueue("record", key, "good")
    harness = ScalerHarness(w.settings()).start()
    try:
        eventually(lambda: w.r.llen(key) >= 1, timeout=60, what="the good job ran")
        eventually(lambda: w.r.zcard(f"{w.ns}:{w.queue}.XQ") == 1, timeout=30,
                   what="the bad job dead-lettered")
    finally:
        harness.stop()
    assert [v.split("@")[0] for v in w.values(key)] == ["good"]
    reasons = w.r.hgetall(f"{w.prefix}:dead-reasons:{w.queue}")
    assert len(reasons) == 1
    assert "cpus" in next(iter(reasons.values()))


def test_failing_job_is_retried_then_dead_lettered(world: World) -> None:
    w = world
    key = f"{w.ns}:fails"
    w.enqueue("always_fails", key)
    harness = ScalerHarness(w.settings()).start()
    try:
        eventually(lambda: w.r.zcard(f"{w.ns}:{w.queue}.XQ") == 1, timeout=60,
                   what="dead-lettered after its retry")
        eventually(lambda: not w.machines(), timeout=30, what="no machine left")
    finally:
        harness.stop()
    assert w.r.get(key) == "2"  # the first run and one retry (max_retries=1)
    assert len(w.machines(include_deleted=True)) == 2  # one machine each


def test_machine_that_never_boots_gives_its_job_back(world: World) -> None:
    w = world
    key = f"{w.ns}:boot"
    api = w.api
    r = api.post("/_admin/faults", json={"machines": {"never_boot_rate": 1.0}})
    assert r.status_code in (200, 204), r.text
    w.enqueue("record", key, "x")
    harness = ScalerHarness(
        w.settings(extra_pool={"boot_timeout": "1s", "max_launches": 5})
    ).start()
    try:
        eventually(lambda: any(m["state"] == "starting" for m in w.machines()),
                   timeout=30, what="a machine stuck in starting")
        api.post("/_admin/faults", json={})  # the next machine boots
        eventually(lambda: w.r.llen(key) >= 1, timeout=60, what="the job ran after all")
        eventually(lambda: not w.machines(), timeout=30, what="no machine left")
    finally:
        harness.stop()
    assert len(w.values(key)) == 1
    assert len(w.machines(include_deleted=True)) >= 2


def test_machine_past_max_runtime_is_destroyed_and_job_dead_lettered(world: World) -> None:
    w = world
    key = f"{w.ns}:hang"
    w.enqueue("sleeper", key, 600)
    harness = ScalerHarness(
        # Long enough for the runner to start its job on a loaded 2-core host (Python's
        # start-up alone has taken over 2 s there); the job itself sleeps for 600 s.
        w.settings(extra_pool={"max_runtime": "8s", "max_launches": 1})
    ).start()
    try:
        eventually(lambda: w.r.zcard(f"{w.ns}:{w.queue}.XQ") == 1, timeout=60,
                   what="the hung job dead-lettered")
        eventually(lambda: not w.machines(), timeout=30, what="no machine left")
    finally:
        harness.stop()
    assert w.values(key) == ["start"]
    reason = next(iter(w.r.hgetall(f"{w.prefix}:dead-reasons:{w.queue}").values()))
    assert "max_runtime" in reason


def test_crashed_machine_gives_its_job_back(world: World) -> None:
    w = world
    key = f"{w.ns}:crash"
    api = w.api
    api.post("/_admin/faults", json={"machines": {"crash_rate": 1.0, "crash_after": 0.0,
                                                  "crash_exit_code": 137}})
    w.enqueue("record", key, "x")
    harness = ScalerHarness(w.settings(extra_pool={"max_launches": 5})).start()
    try:
        eventually(lambda: len(w.machines(include_deleted=True)) >= 1, timeout=30,
                   what="a first machine")
        eventually(lambda: any(m["state"] in ("stopped", "destroyed", "failed")
                               for m in w.machines(include_deleted=True)),
                   timeout=30, what="the first machine crashed")
        api.post("/_admin/faults", json={})
        eventually(lambda: w.r.llen(key) >= 1, timeout=60, what="the job ran on a relaunch")
        eventually(lambda: not w.machines(), timeout=30, what="no machine left")
    finally:
        harness.stop()
    assert len(w.values(key)) == 1


def test_ambiguous_creates_are_resolved_without_duplicates(world: World) -> None:
    w = world
    key = f"{w.ns}:amb"
    api = w.api
    api.post("/_admin/faults", json={"Machines_create": {"ambiguous_rate": 1.0,
                                                         "ambiguous_mode": "408"}})
    for i in range(3):
        w.enqueue("record", key, f"a{i}")
    harness = ScalerHarness(w.settings()).start()
    try:
        eventually(lambda: w.r.llen(key) >= 3, timeout=60, what="all three ran")
    finally:
        harness.stop()
    api.post("/_admin/faults", json={})
    assert sorted(v.split("@")[0] for v in w.values(key)) == ["a0", "a1", "a2"]
    jobs = [m["config"]["metadata"]["fly_scaler_job"] for m in w.machines(include_deleted=True)]
    assert len(jobs) == len(set(jobs)) == 3
