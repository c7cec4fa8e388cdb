"""Machine lifecycle on the local Machines API with real processes, over real HTTP."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaler.local import LocalAPIServer
from scaler.local.testing import eventually, make_app, make_machine, py, wait_state


@pytest.fixture
def client(local_api: LocalAPIServer) -> Iterator[httpx.Client]:
    with local_api.client(timeout=30) as c:
        yield c


@pytest.fixture
def app(client: httpx.Client) -> str:
    return make_app(client)


def _exit_events(client: httpx.Client, app: str, mid: str) -> list[dict[str, Any]]:
    events = client.get(f"/v1/apps/{app}/machines/{mid}/events", params={"limit": 50}).json()
    return [e for e in events if e["type"] == "exit"]


def test_create_returns_fly_shaped_machine(client: httpx.Client, app: str) -> None:
    r = client.post(
        f"/v1/apps/{app}/machines",
        json={"config": {"image": "registry-1.docker.io/library/ubuntu:latest",
                         "init": {"exec": ["python", "-c", "import time; time.sleep(60)"]}}},
    )
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9A-Z]{26}-ord", r.headers["fly-request-id"])
    m = r.json()
    assert re.fullmatch(r"[0-9a-f]{14}", m["id"])
    assert re.fullmatch(r"[0-9A-Z]{26}", m["instance_id"])
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d{4}", m["name"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["created_at"])
    assert m["state"] == "created"
    assert m["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert m["image_ref"]["repository"] == "library/ubuntu"
    launch = m["events"][0]
    assert (launch["type"], launch["status"], launch["source"]) == ("launch", "created", "user")
    assert launch["timestamp"] > 1_600_000_000_000  # milliseconds
    started = wait_state(client, app, m["id"], "started")
    assert started["state"] == "started" and started["version"] == m["instance_id"]


def test_env_injection_and_working_directory(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(
        client, app,
        py("import os, json; json.dump(dict(os.environ), open('env.json', 'w'))"),
        config={"env": {"MY_VAR": "hello"}, "restart": {"policy": "no"},
                "guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024},
                "metadata": {"fly_process_group": "worker"}},
        region="ams",
    )
    wait_state(client, app, m["id"], "stopped")
    env = json.loads(
        (local_api.workdir / "machines" / m["id"] / "root" / "env.json").read_text())
    assert env["MY_VAR"] == "hello"
    assert env["FLY_APP_NAME"] == app
    assert env["FLY_MACHINE_ID"] == env["FLY_ALLOC_ID"] == m["id"]
    assert env["FLY_REGION"] == env["PRIMARY_REGION"] == "ams"
    assert env["FLY_IMAGE_REF"] == "local/test:latest"
    assert env["FLY_PRIVATE_IP"] == m["private_ip"]
    assert env["FLY_MACHINE_VERSION"] == m["instance_id"]
    assert env["FLY_PROCESS_GROUP"] == "worker"
    assert env["FLY_VM_MEMORY_MB"] == "1024"
    assert "PATH" in env
    assert local_api.token not in json.dumps(env)  # the API token never reaches a machine


def test_log_file_captures_output(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app, py("print('hello from the machine')"),
                     config={"restart": {"policy": "no"}})
    wait_state(client, app, m["id"], "stopped")
    log = (local_api.workdir / "machines" / m["id"] / "machine.log").read_text()
    assert "hello from the machine" in log


def test_image_mapping_runs_when_config_has_no_command(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory(images={"worker": ["python", "-c", "import sys; sys.exit(7)"]})
    with api.client() as c:
        app = make_app(c)
        r = c.post(f"/v1/apps/{app}/machines",
                   json={"config": {"image": "worker:1.2", "restart": {"policy": "no"}}})
        mid = r.json()["id"]
        wait_state(c, app, mid, "stopped")
        assert _exit_events(c, app, mid)[0]["request"]["exit_event"]["exit_code"] == 7


def test_no_command_fails_the_machine(client: httpx.Client, app: str) -> None:
    r = client.post(f"/v1/apps/{app}/machines", json={"config": {"image": "unknown:latest"}})
    mid = r.json()["id"]
    wait_state(client, app, mid, "failed")
    # failed machines can be destroyed without force
    assert client.delete(f"/v1/apps/{app}/machines/{mid}").status_code == 200
    wait_state(client, app, mid, "destroyed")


def test_restart_policy_no_records_exit_code(client: httpx.Client, app: str) -> None:
    m = make_machine(
        client, app, py("import sys; sys.exit(3)"), config={"restart": {"policy": "no"}}
    )
    wait_state(client, app, m["id"], "stopped")
    exits = _exit_events(client, app, m["id"])
    assert len(exits) == 1
    exit_event = exits[0]["request"]["exit_event"]
    assert exit_event["exit_code"] == 3
    assert exit_event["restarting"] is False
    assert exit_event["requested_stop"] is False


def test_restart_policy_on_failure_respects_max_retries(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, py("import sys; sys.exit(3)"),
                     config={"restart": {"policy": "on-failure", "max_retries": 2}})
    wait_state(client, app, m["id"], "stopped")
    exits = _exit_events(client, app, m["id"])
    assert len(exits) == 3  # first run + 2 retries
    assert [e["request"]["exit_event"]["restarting"] for e in exits] == [False, True, True]


def test_default_policy_does_not_restart_a_clean_exit(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, py("pass"))
    wait_state(client, app, m["id"], "stopped")
    assert len(_exit_events(client, app, m["id"])) == 1


def test_restart_policy_always_restarts_clean_exits(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, py("pass"), config={"restart": {"policy": "always"}})
    eventually(lambda: len(_exit_events(client, app, m["id"])) >= 3)
    assert client.get(f"/v1/apps/{app}/machines/{m['id']}").json()["state"] != "stopped"
    client.post(f"/v1/apps/{app}/machines/{m['id']}/stop")
    wait_state(client, app, m["id"], "stopped")


def test_auto_destroy_after_main_process_exits(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, py("pass"),
                     config={"auto_destroy": True, "restart": {"policy": "no"}})
    wait_state(client, app, m["id"], "destroyed")
    got = client.get(f"/v1/apps/{app}/machines/{m['id']}").json()
    assert got["state"] == "destroyed"
    listed = client.get(f"/v1/apps/{app}/machines").json()
    assert m["id"] not in [x["id"] for x in listed]
    deleted = client.get(f"/v1/apps/{app}/machines", params={"include_deleted": "true"}).json()
    assert m["id"] in [x["id"] for x in deleted]


def test_auto_destroy_restarts_first_on_failure(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, py("import sys; sys.exit(1)"),
                     config={"auto_destroy": True,
                             "restart": {"policy": "on-failure", "max_retries": 1}})
    wait_state(client, app, m["id"], "destroyed")
    assert len(_exit_events(client, app, m["id"])) == 2


_IGNORE_SIGINT = (
    "import signal, time, pathlib; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "pathlib.Path('ready').touch(); time.sleep(3600)"
)
_EXIT_ON_SIGTERM = (
    "import signal, sys, time, pathlib; "
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
    "pathlib.Path('ready').touch(); time.sleep(3600)"
)


def _ready(local_api: LocalAPIServer, mid: str) -> None:
    eventually(lambda: (local_api.workdir / "machines" / mid / "root" / "ready").exists())


def test_stop_sends_signal_then_sigkill_after_timeout(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app, py(_IGNORE_SIGINT))
    wait_state(client, app, m["id"], "started")
    _ready(local_api, m["id"])
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/stop", json={"timeout": "300ms"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    wait_state(client, app, m["id"], "stopped")
    exit_event = _exit_events(client, app, m["id"])[0]["request"]["exit_event"]
    assert exit_event["requested_stop"] is True
    assert exit_event["signal"] == 2  # SIGINT, the default stop signal
    assert exit_event["exit_code"] == 137  # it ignored SIGINT, so SIGKILL ended it


def test_stop_with_a_signal_the_process_handles(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app, py(_EXIT_ON_SIGTERM))
    wait_state(client, app, m["id"], "started")
    _ready(local_api, m["id"])
    client.post(f"/v1/apps/{app}/machines/{m['id']}/stop", json={"signal": "SIGTERM"})
    wait_state(client, app, m["id"], "stopped")
    exit_event = _exit_events(client, app, m["id"])[0]["request"]["exit_event"]
    assert exit_event["exit_code"] == 0 and exit_event["signal"] == 15


def test_stop_config_signal_is_the_default(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app, py(_EXIT_ON_SIGTERM),
                     config={"stop_config": {"signal": "SIGTERM", "timeout": "10s"}})
    wait_state(client, app, m["id"], "started")
    _ready(local_api, m["id"])
    client.post(f"/v1/apps/{app}/machines/{m['id']}/stop")
    wait_state(client, app, m["id"], "stopped")
    assert _exit_events(client, app, m["id"])[0]["request"]["exit_event"]["exit_code"] == 0


def test_stop_then_start_again(client: httpx.Client, app: str, local_api: LocalAPIServer) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    first_pids = set(local_api.pids())
    client.post(f"/v1/apps/{app}/machines/{m['id']}/stop", json={"signal": "SIGKILL"})
    wait_state(client, app, m["id"], "stopped")
    assert local_api.pids() == []
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/start")
    assert r.status_code == 200
    assert r.json() == {"previous_state": "stopped", "migrated": False, "new_host": ""}
    wait_state(client, app, m["id"], "started")
    assert set(local_api.pids()) - first_pids  # a new process


def test_start_when_started_is_a_no_op(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/start")
    assert r.status_code == 200 and r.json()["previous_state"] == "started"


def test_skip_launch_leaves_machine_created(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    r = client.get(f"/v1/apps/{app}/machines/{m['id']}/wait",
                   params={"state": "settled", "timeout": 1})
    assert r.json()["state"] == "created"
    client.post(f"/v1/apps/{app}/machines/{m['id']}/start")
    wait_state(client, app, m["id"], "started")


def test_restart_replaces_the_process(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    before = set(local_api.pids())
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/restart",
                    params={"signal": "SIGKILL", "timeout": "1s"})
    assert r.status_code == 200
    wait_state(client, app, m["id"], "started")
    assert set(local_api.pids()).isdisjoint(before)
    types = [e["type"] for e in client.get(f"/v1/apps/{app}/machines/{m['id']}/events").json()]
    assert "restart" in types


def test_restart_from_stopped_is_refused(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/restart")
    assert r.status_code == 412


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_suspend_freezes_and_start_resumes(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    (pid,) = local_api.pids()
    assert client.post(f"/v1/apps/{app}/machines/{m['id']}/suspend").json() == {"ok": True}
    wait_state(client, app, m["id"], "suspended")
    eventually(lambda: _proc_state(pid) == "T")  # SIGSTOP lands asynchronously
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/start")
    assert r.json()["previous_state"] == "suspended"
    wait_state(client, app, m["id"], "started")
    assert local_api.pids() == [pid]
    assert _proc_state(pid) != "T"


def test_suspend_requires_started(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    assert client.post(f"/v1/apps/{app}/machines/{m['id']}/suspend").status_code == 412


def test_signal_by_name_and_number(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, config={"restart": {"policy": "no"}})
    wait_state(client, app, m["id"], "started")
    bad = client.post(f"/v1/apps/{app}/machines/{m['id']}/signal", json={"signal": "SIGNOPE"})
    assert bad.status_code == 400 and "signal" in bad.json()["error"]
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/signal", json={"signal": 9})
    assert r.status_code == 200
    wait_state(client, app, m["id"], "stopped")
    exit_event = _exit_events(client, app, m["id"])[0]["request"]["exit_event"]
    assert exit_event["exit_code"] == 137 and exit_event["signal"] == 9
    m2 = make_machine(client, app, config={"restart": {"policy": "no"}})
    wait_state(client, app, m2["id"], "started")
    r = client.post(f"/v1/apps/{app}/machines/{m2['id']}/signal", json={"signal": "SIGTERM"})
    assert r.status_code == 200
    wait_state(client, app, m2["id"], "stopped")
    assert _exit_events(client, app, m2["id"])[0]["request"]["exit_event"]["signal"] == 15


def test_destroy_needs_force_unless_stopped(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    r = client.delete(f"/v1/apps/{app}/machines/{m['id']}")
    assert r.status_code == 412 and "force" in r.json()["error"]
    r = client.delete(f"/v1/apps/{app}/machines/{m['id']}", params={"force": "true"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    wait_state(client, app, m["id"], "destroyed")
    assert local_api.pids() == []
    assert client.get(f"/v1/apps/{app}/machines/{m['id']}").json()["state"] == "destroyed"


def test_destroy_accepts_fly_go_kill_param(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    assert client.delete(f"/v1/apps/{app}/machines/{m['id']}",
                         params={"kill": "true"}).status_code == 200
    wait_state(client, app, m["id"], "destroyed")


def test_destroy_stopped_machine(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, py("pass"), config={"restart": {"policy": "no"}})
    wait_state(client, app, m["id"], "stopped")
    assert client.delete(f"/v1/apps/{app}/machines/{m['id']}").status_code == 200
    wait_state(client, app, m["id"], "destroyed")
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}/start")
    assert r.status_code == 412


def test_update_replaces_version_and_reboots(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    config = {"image": "local/test:v2", "init": {"exec": ["python", "-c",
              "import time; time.sleep(3600)"]}, "env": {"V": "2"}}
    stale = client.post(f"/v1/apps/{app}/machines/{m['id']}",
                        json={"config": config, "current_version": "01AAAAAAAAAAAAAAAAAAAAAAAA"})
    assert stale.status_code == 409
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}",
                    json={"config": config, "current_version": m["instance_id"]})
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["instance_id"] != m["instance_id"]
    assert updated["state"] == "replacing"
    got = wait_state(client, app, m["id"], "started", version=updated["instance_id"])
    assert got["version"] == updated["instance_id"]
    versions = client.get(f"/v1/apps/{app}/machines/{m['id']}/versions").json()
    assert [v["version"] for v in versions] == [updated["instance_id"], m["instance_id"]]
    assert versions[0]["user_config"]["env"] == {"V": "2"}
    # the old version counts as stopped
    old = client.get(f"/v1/apps/{app}/machines/{m['id']}/wait",
                     params={"state": "stopped", "version": m["instance_id"], "timeout": 1})
    assert old.status_code == 200


def test_update_of_stopped_machine_stays_stopped(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, py("pass"), config={"restart": {"policy": "no"}})
    wait_state(client, app, m["id"], "stopped")
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}",
                    json={"config": {"image": "local/test:v2", "init": {"exec": ["true"]}}})
    assert r.status_code == 200 and r.json()["state"] == "stopped"


def test_update_name_and_region_are_immutable(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    cfg = {"image": "x:1"}
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}", json={"config": cfg, "name": "other"})
    assert r.status_code == 400 and r.json()["error"].startswith("name:")
    r = client.post(f"/v1/apps/{app}/machines/{m['id']}", json={"config": cfg, "region": "syd"})
    assert r.status_code == 400 and r.json()["error"].startswith("region:")


def test_cordon_and_uncordon(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    base = f"/v1/apps/{app}/machines/{m['id']}"
    assert client.post(base + "/cordon").status_code == 200
    assert client.get(base).json()["cordoned"] is True
    assert client.post(base + "/uncordon").status_code == 200
    assert client.get(base).json()["cordoned"] is False


def test_events_limit(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    client = local_api_factory(runtime="sim").client()
    app = make_app(client)
    m = make_machine(client, app, skip_launch=True)
    base = f"/v1/apps/{app}/machines/{m['id']}"
    for _ in range(13):  # 4 events each, plus the launch
        client.post(base + "/start")
        wait_state(client, app, m["id"], "started")
        client.post(base + "/stop", json={"signal": "SIGKILL"})
        wait_state(client, app, m["id"], "stopped")
    events = client.get(base + "/events").json()
    assert len(events) == 20
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert len(client.get(base + "/events", params={"limit": 50}).json()) == 50
    assert client.get(base + "/events", params={"limit": 51}).status_code == 400
    client.close()


def test_missing_machine_is_404(client: httpx.Client, app: str) -> None:
    r = client.get(f"/v1/apps/{app}/machines/0123456789abcd")
    assert r.status_code == 404 and r.json() == {"error": "machine not found"}
    r = client.get("/v1/apps/nope/machines")
    assert r.status_code == 404 and r.json() == {"error": "Could not find App"}


def test_processes_run_in_their_own_process_group(
    client: httpx.Client, app: str, local_api: LocalAPIServer
) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    (pid,) = local_api.pids()
    assert os.getpgid(pid) == pid
