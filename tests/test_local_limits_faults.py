"""Rate limits, fault injection, admin endpoints and counters of the local Machines API."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from scaler.local import LocalAPIServer
from scaler.local.faults import FaultSpec
from scaler.local.testing import make_app, make_machine, wait_state


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_get_machine_bursts_10_then_429(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    clock = FakeClock()
    api = local_api_factory(runtime="sim", rate_limits="fly", clock=clock)
    with api.client() as c:
        app = make_app(c)
        m = make_machine(c, app, skip_launch=True)
        codes = [c.get(f"/v1/apps/{app}/machines/{m['id']}").status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]
        r = c.get(f"/v1/apps/{app}/machines/{m['id']}")
        assert r.status_code == 429
        assert r.json() == {"error": "rate limit exceeded"}
        assert int(r.headers["retry-after"]) >= 1
        clock.now += 0.2  # Get Machine refills at 5/s
        assert c.get(f"/v1/apps/{app}/machines/{m['id']}").status_code == 200
        assert c.get(f"/v1/apps/{app}/machines/{m['id']}").status_code == 429


def test_limits_are_per_action_and_scope(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    clock = FakeClock()
    api = local_api_factory(runtime="sim", rate_limits="fly", clock=clock)
    with api.client() as c:
        app = make_app(c)
        other = make_app(c)
        body = {"config": {"image": "x"}, "skip_launch": True}
        codes = [c.post(f"/v1/apps/{app}/machines", json=body).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]  # 1/s with bursts of 3, per app
        assert c.post(f"/v1/apps/{other}/machines", json=body).status_code == 200
        assert c.get(f"/v1/apps/{app}/machines").status_code == 200  # another action
        clock.now += 1.0
        assert c.post(f"/v1/apps/{app}/machines", json=body).status_code == 200
    assert api.state.requests[("Machines_create", 429)] == 1
    assert sum(1 for _, op, st in api.state.recent if op == "Machines_create") == 6


def test_rate_limits_off(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim", rate_limits="off")
    with api.client() as c:
        app = make_app(c)
        m = make_machine(c, app, skip_launch=True)
        codes = {c.get(f"/v1/apps/{app}/machines/{m['id']}").status_code for _ in range(30)}
        assert codes == {200}


def _statuses(api: LocalAPIServer, n: int) -> list[int]:
    with api.client() as c:
        return [c.get("/v1/apps", params={"org_slug": "personal"}).status_code for _ in range(n)]


def test_faults_are_deterministic_for_a_seed(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    faults = {"Apps_list": {"error_rate": 0.3, "rate_limit_rate": 0.2}}
    first = _statuses(local_api_factory(runtime="sim", faults=faults, seed=7), 40)
    second = _statuses(local_api_factory(runtime="sim", faults=faults, seed=7), 40)
    other = _statuses(local_api_factory(runtime="sim", faults=faults, seed=8), 40)
    assert first == second
    assert first != other
    assert {200, 429, 503} == set(first)


def test_compact_fault_spec_and_error_status(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim", faults="*.error_rate=1,*.error_status=502")
    with api.client() as c:
        r = c.get("/v1/apps", params={"org_slug": "personal"})
        assert r.status_code == 502 and "error" in r.json()


def test_fault_spec_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"faults\.Machines_create\.error_rate"):
        FaultSpec.parse({"Machines_create": {"error_rate": 2}})
    with pytest.raises(ValueError, match=r"faults\.machines\.nope"):
        FaultSpec.parse("machines.nope=1")


def test_capacity_errors(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim", faults={"Machines_create": {"capacity_rate": 1}})
    with api.client() as c:
        app = make_app(c)
        r = c.post(f"/v1/apps/{app}/machines", json={"config": {"image": "x"}})
        assert r.status_code == 412
        assert r.json()["status"] == "insufficient_capacity"
        assert c.get(f"/v1/apps/{app}/machines").json() == []


def test_ambiguous_create_408_still_creates(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim", faults={"Machines_create": {"ambiguous_rate": 1}})
    with api.client() as c:
        app = make_app(c)
        r = c.post(f"/v1/apps/{app}/machines",
                   json={"name": "job-1", "config": {"image": "x", "metadata": {"job": "1"}}})
        assert r.status_code == 408
        listed = c.get(f"/v1/apps/{app}/machines", params={"metadata.job": "1"}).json()
        assert [m["name"] for m in listed] == ["job-1"]
    assert api.state.faults_injected["ambiguous_create"] == 1


def test_ambiguous_create_drop_closes_the_connection(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(
        runtime="sim", faults={"Machines_create": {"ambiguous_rate": 1, "ambiguous_mode": "drop"}}
    )
    with api.client() as c:
        app = make_app(c)
        with pytest.raises(httpx.TransportError):
            c.post(f"/v1/apps/{app}/machines", json={"config": {"image": "x"}})
        assert len(c.get(f"/v1/apps/{app}/machines").json()) == 1


def test_machines_that_never_boot(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim", faults={"machines": {"never_boot_rate": 1}})
    with api.client() as c:
        app = make_app(c)
        m = make_machine(c, app)
        r = c.get(f"/v1/apps/{app}/machines/{m['id']}/wait",
                  params={"state": "started", "timeout": 1})
        assert r.status_code == 408
        assert c.get(f"/v1/apps/{app}/machines/{m['id']}").json()["state"] == "starting"
        # a stuck machine can still be force-destroyed
        c.delete(f"/v1/apps/{app}/machines/{m['id']}", params={"force": "true"})
        wait_state(c, app, m["id"], "destroyed")


def test_machines_that_crash_mid_run(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(
        faults={"machines": {"crash_rate": 1, "crash_after": 0, "crash_exit_code": 9}}
    )
    with api.client() as c:
        app = make_app(c)
        m = make_machine(c, app, config={"restart": {"policy": "no"}})
        wait_state(c, app, m["id"], "stopped")
        events = c.get(f"/v1/apps/{app}/machines/{m['id']}/events").json()
        exit_event = next(e for e in events if e["type"] == "exit")["request"]["exit_event"]
        assert exit_event["exit_code"] == 9
    assert api.pids() == []


def test_admin_faults_and_state(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim")
    with api.client() as c:
        app = make_app(c)
        r = c.post("/_admin/faults", json={"Apps_show": {"error_rate": 1}, "seed": 1})
        assert r.status_code == 200 and r.json()["Apps_show"]["error_rate"] == 1
        assert c.get(f"/v1/apps/{app}").status_code == 503
        bad = c.post("/_admin/faults", json={"Apps_show": {"error_rate": "lots"}})
        assert bad.status_code == 400 and "error_rate" in bad.json()["error"]
        c.post("/_admin/faults", json={})
        assert c.get(f"/v1/apps/{app}").status_code == 200
        state = c.get("/_admin/state").json()
        assert state["requests"]["Apps_show"] == {"503": 1, "200": 1}
        assert state["faults_injected"] == {"error": 1}


def test_admin_exit_drives_sim_machines(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim")
    with api.client() as c:
        app = make_app(c)
        m = make_machine(c, app, config={"restart": {"policy": "no"}, "auto_destroy": True})
        wait_state(c, app, m["id"], "started")
        r = c.post(f"/_admin/apps/{app}/machines/{m['id']}/exit", json={"exit_code": 4})
        assert r.status_code == 200
        wait_state(c, app, m["id"], "destroyed")
        events = c.get(f"/v1/apps/{app}/machines/{m['id']}/events").json()
        exit_event = next(e for e in events if e["type"] == "exit")["request"]["exit_event"]
        assert exit_event["exit_code"] == 4


def test_sim_run_seconds(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim", sim_run_seconds=0.0)
    with api.client() as c:
        app = make_app(c)
        ids = [make_machine(c, app, config={"auto_destroy": True,
                                            "restart": {"policy": "no"}})["id"]
               for _ in range(20)]
        for mid in ids:
            wait_state(c, app, mid, "destroyed")
    assert api.state.counts() == {"destroyed": 20}
