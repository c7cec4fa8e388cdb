"""The local Machines API's faults for slow Fly and outages: answers late after the effect,
dropped connections, slow placement, a skewed clock; and the create log and counters the chaos
suite reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest

from scaler.local import LocalAPIServer
from scaler.local.faults import FaultSpec
from scaler.local.testing import eventually, make_app, make_machine, wait_state


def test_latency_after_commit_creates_before_answering(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim",
                            faults={"Machines_create": {"latency_after_commit": 1.5}})
    with api.client(timeout=10) as c:
        app = make_app(c)
        answer: list[httpx.Response] = []
        body = {"name": "slow-1", "config": {"image": "x"}}
        sender = threading.Thread(
            target=lambda: answer.append(c.post(f"/v1/apps/{app}/machines", json=body))
        )
        sender.start()
        listed = eventually(lambda: c.get(f"/v1/apps/{app}/machines").json(), timeout=5,
                            what="the machine listed")
        assert [m["name"] for m in listed] == ["slow-1"]
        assert sender.is_alive(), "the answer came before the delay"
        [pending] = c.get("/_admin/creates").json()  # logged as it arrived
        assert (pending["name"], pending["status"], pending["answered"]) == ("slow-1", None, None)
        sender.join(10)
        assert answer[0].status_code == 200
        assert answer[0].json()["name"] == "slow-1"


def test_drop_rate_is_an_outage_with_no_effect(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim")
    with api.client() as c:
        app = make_app(c)
        c.post("/_admin/faults", json={"*": {"drop_rate": 1}})
        with pytest.raises(httpx.TransportError):
            c.post(f"/v1/apps/{app}/machines", json={"config": {"image": "x"}})
        with pytest.raises(httpx.TransportError):
            c.get(f"/v1/apps/{app}/machines")
        state = c.get("/_admin/state").json()  # the admin side still answers
        assert state["faults_injected"]["drop"] == 2
        assert state["machines"] == {}
        c.post("/_admin/faults", json={})
        assert c.get(f"/v1/apps/{app}/machines").json() == []
        creates = c.get("/_admin/creates").json()
        assert [x["status"] for x in creates] == [499]


def test_boot_delay_keeps_a_new_machine_created(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim", faults={"machines": {"boot_delay": 1.0}})
    with api.client() as c:
        app = make_app(c)
        began = time.monotonic()
        m = make_machine(c, app)
        assert c.get(f"/v1/apps/{app}/machines/{m['id']}").json()["state"] == "created"
        wait_state(c, app, m["id"], "started")
        assert time.monotonic() - began >= 1.0
        # a start of a stopped machine is not a placement: no delay
        c.post(f"/v1/apps/{app}/machines/{m['id']}/stop")
        wait_state(c, app, m["id"], "stopped")
        began = time.monotonic()
        c.post(f"/v1/apps/{app}/machines/{m['id']}/start")
        wait_state(c, app, m["id"], "started")
        assert time.monotonic() - began < 1.0


def _date(r: httpx.Response) -> float:
    assert r.headers.get_list("date") == [r.headers["date"]], "one Date header"
    return parsedate_to_datetime(r.headers["date"]).timestamp()


def test_clock_offset_shifts_every_timestamp_and_the_date_header(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim", faults={"clock": {"offset": 3600}})
    with api.client() as c:
        app = make_app(c)
        m = make_machine(c, app)
        r = c.get(f"/v1/apps/{app}/machines/{m['id']}")
        now = time.time()
        assert abs(_date(r) - (now + 3600)) < 5
        body = r.json()
        created = datetime.fromisoformat(body["created_at"]).timestamp()
        assert abs(created - (now + 3600)) < 5
        assert abs(body["events"][-1]["timestamp"] / 1000 - (now + 3600)) < 5
        c.post("/_admin/faults", json={"clock": {"offset": -300}})
        r = c.get(f"/v1/apps/{app}/machines/{m['id']}")
        assert abs(_date(r) - (time.time() - 300)) < 5
        assert c.get("/_admin/faults").json()["clock"] == {"offset": -300}
        c.post("/_admin/faults", json={})
        assert abs(_date(c.get("/_admin/state")) - time.time()) < 5


def test_new_fault_fields_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match=r"faults\.Machines_create\.latency_after_commit"):
        FaultSpec.parse({"Machines_create": {"latency_after_commit": -1}})
    with pytest.raises(ValueError, match=r"faults\.\*\.drop_rate"):
        FaultSpec.parse("*.drop_rate=2")
    with pytest.raises(ValueError, match=r"faults\.machines\.boot_delay"):
        FaultSpec.parse({"machines": {"boot_delay": "slow"}})
    with pytest.raises(ValueError, match=r"faults\.clock\.skew"):
        FaultSpec.parse("clock.skew=5")
    spec = FaultSpec.parse("clock.offset=-300,Machines_create.latency_jitter=2")
    assert spec.clock.offset == -300
    assert spec.ops["Machines_create"].latency_jitter == 2


def test_jitter_draws_latencies_within_bounds() -> None:
    from scaler.local.faults import FaultInjector

    spec = FaultSpec.parse({"Machines_create": {"latency_after_commit": 4, "latency_jitter": 8}})
    injector = FaultInjector(spec, seed=3)
    delays = [injector.for_request("Machines_create").latency_after_commit for _ in range(50)]
    assert all(4 <= d <= 12 for d in delays)
    assert max(delays) - min(delays) > 4
    assert injector.for_request("Machines_create").latency == 0


def test_create_log_and_counters(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim", rate_limits="fly")
    with api.client() as c:
        app = make_app(c)
        for i in range(4):
            c.post(f"/v1/apps/{app}/machines", headers={"user-agent": f"replica-{i % 2}"},
                   json={"name": f"m-{i}", "skip_launch": True,
                         "config": {"image": "x", "metadata": {"job": str(i)}}})
        creates = c.get("/_admin/creates").json()
        assert [(x["name"], x["metadata"], x["status"]) for x in creates] == [
            ("m-0", {"job": "0"}, 200), ("m-1", {"job": "1"}, 200),
            ("m-2", {"job": "2"}, 200), ("m-3", {"job": "3"}, 429),
        ]
        state = c.get("/_admin/state").json()
        assert state["rate_limited"] == {"Machines_create": 1}
        assert state["creates_by_agent"] == {"replica-0": 2, "replica-1": 2}
        log = c.get("/_admin/requests", params={"operation": "Machines_create"}).json()
        assert [x["status"] for x in log] == [200, 200, 200, 429]
        assert log == sorted(log, key=lambda x: x["t"])


def test_live_and_peak_live_per_app_and_the_admin_listing(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim", faults={"*": {"drop_rate": 1}})
    with api.client() as c:
        c.post("/_admin/faults", json={})
        app = make_app(c)
        ids = [make_machine(c, app, config={"auto_destroy": True,
                                            "restart": {"policy": "no"}})["id"]
               for _ in range(3)]
        for mid in ids:
            wait_state(c, app, mid, "started")
        for mid in ids[:2]:
            c.post(f"/_admin/apps/{app}/machines/{mid}/exit", json={"exit_code": 0})
            wait_state(c, app, mid, "destroyed")
        make_machine(c, app, skip_launch=True)
        state = c.get("/_admin/state").json()
        assert state["peak_live"] == {app: 3}
        assert state["live"] == {app: 2}
        c.post("/_admin/faults", json={"*": {"drop_rate": 1, "error_rate": 1}})
        listed = c.get(f"/_admin/apps/{app}/machines").json()  # faults do not apply
        assert sorted(m["state"] for m in listed) == ["created", "destroyed", "destroyed",
                                                      "started"]


def test_ambiguous_5xx_creates_and_the_log_names_the_machine(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(runtime="sim", faults={"Machines_create": {
        "ambiguous_rate": 1, "ambiguous_mode": "5xx", "error_status": 502}})
    with api.client() as c:
        app = make_app(c)
        r = c.post(f"/v1/apps/{app}/machines", json={"name": "a-1", "config": {"image": "x"}})
        assert r.status_code == 502
        [made] = c.get(f"/v1/apps/{app}/machines").json()
        c.post("/_admin/faults", json={"Machines_create": {"error_rate": 1}})
        assert c.post(f"/v1/apps/{app}/machines",
                      json={"name": "a-2", "config": {"image": "x"}}).status_code == 503
        log = c.get("/_admin/creates").json()
        assert [(x["name"], x["status"], x["machine_id"]) for x in log] == [
            ("a-1", 502, made["id"]), ("a-2", 503, None)]
