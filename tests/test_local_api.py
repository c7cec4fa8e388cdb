"""Apps, volumes, listing, validation, metadata, leases, wait and auth of the local Machines API
(sim runtime: no processes needed), over real HTTP."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from scaler.local import LocalAPIServer
from scaler.local.testing import make_app, make_machine, wait_state


@pytest.fixture
def api(local_api_factory: Callable[..., LocalAPIServer]) -> LocalAPIServer:
    return local_api_factory(runtime="sim")


@pytest.fixture
def client(api: LocalAPIServer) -> Iterator[httpx.Client]:
    with api.client(timeout=30) as c:
        yield c


@pytest.fixture
def app(client: httpx.Client) -> str:
    return make_app(client)


# -- auth ----------------------------------------------------------------------------------------


def test_requests_without_a_valid_token_are_401(api: LocalAPIServer) -> None:
    with httpx.Client(base_url=api.url) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": api.token}):
            r = anon.get("/v1/apps", params={"org_slug": "personal"}, headers=headers)
            assert r.status_code == 401
            assert r.json() == {"error": "Authenticate: token validation error"}
            assert "fly-request-id" in r.headers
        ok = anon.get("/v1/apps", params={"org_slug": "personal"},
                      headers={"Authorization": f"FlyV1 {api.token}"})
        assert ok.status_code == 200
        assert anon.get("/_admin/state").status_code == 401


def test_token_never_appears_in_repr(api: LocalAPIServer) -> None:
    assert api.token not in repr(api) and api.token not in repr(api.config)


def test_unimplemented_spec_operations_answer_501(client: httpx.Client, app: str) -> None:
    r = client.get(f"/v1/apps/{app}/certificates")
    assert r.status_code == 501 and "error" in r.json()
    assert client.get("/v1/nothing/here").status_code == 404


# -- apps ----------------------------------------------------------------------------------------


def test_app_create_get_list_delete(client: httpx.Client) -> None:
    r = client.post("/v1/apps", json={"name": "my-app", "org_slug": "personal"})
    assert r.status_code == 201
    body = r.json()
    assert re.fullmatch(r"[a-z0-9]{16}", body["id"]) and isinstance(body["created_at"], int)
    legacy = client.post("/v1/apps", json={"app_name": "legacy-app", "org_slug": "personal"})
    assert legacy.status_code == 201
    taken = client.post("/v1/apps", json={"name": "my-app", "org_slug": "personal"})
    assert taken.status_code == 422 and taken.json()["status"] == "name_taken"
    got = client.get("/v1/apps/my-app").json()
    assert got["name"] == "my-app" and got["organization"]["slug"] == "personal"
    listed = client.get("/v1/apps", params={"org_slug": "personal"}).json()
    assert listed["total_apps"] == 2
    assert {a["name"] for a in listed["apps"]} == {"my-app", "legacy-app"}
    assert client.get("/v1/apps", params={"org_slug": "other"}).json()["total_apps"] == 0
    missing = client.get("/v1/apps")
    assert missing.status_code == 400 and "org_slug" in missing.json()["error"]
    r = client.delete("/v1/apps/my-app")
    assert r.status_code == 202
    assert client.get("/v1/apps/my-app").status_code == 404


def test_app_create_validates(client: httpx.Client) -> None:
    r = client.post("/v1/apps", json={"org_slug": "personal"})
    assert r.status_code == 400 and r.json()["error"].startswith("name:")
    r = client.post("/v1/apps", json={"name": "Bad_Name", "org_slug": "personal"})
    assert r.status_code == 400 and "name" in r.json()["error"]
    r = client.post("/v1/apps", json={"name": "ok-name", "enable_subdomains": "yes"})
    assert r.status_code == 400 and "enable_subdomains" in r.json()["error"]


def test_app_delete_with_machines_needs_force(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    r = client.delete(f"/v1/apps/{app}")
    assert r.status_code == 412 and "force" in r.json()["error"]
    assert client.delete(f"/v1/apps/{app}", params={"force": "true"}).status_code == 202
    assert client.get(f"/v1/apps/{app}").status_code == 404


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {}}, "config.image"),
        ({}, "config"),
        ({"config": {"image": "x", "guest": {"cpu_kind": "shared", "cpus": 1,
                                             "memory_mb": 4096}}}, "config.guest.memory_mb"),
        ({"config": {"image": "x", "guest": {"cpu_kind": "shared", "cpus": 1,
                                             "memory_mb": 300}}}, "config.guest.memory_mb"),
        ({"config": {"image": "x", "guest": {"cpu_kind": "performance", "cpus": 1,
                                             "memory_mb": 1024}}}, "config.guest.memory_mb"),
        ({"config": {"image": "x", "guest": {"cpu_kind": "shared", "cpus": 3}}},
         "config.guest.cpus"),
        ({"config": {"image": "x", "guest": {"cpu_kind": "gpu"}}}, "config.guest.cpu_kind"),
        ({"config": {"image": "x", "restart": {"policy": "sometimes"}}}, "config.restart.policy"),
        ({"config": {"image": "x", "auto_destroy": "yes"}}, "config.auto_destroy"),
        ({"config": {"image": "x"}, "skip_launch": "no"}, "skip_launch"),
        ({"config": {"image": "x", "mounts": [{"volume": "vol_nope", "path": "/d"}]}},
         "config.mounts.0.volume"),
        ({"config": {"image": "x", "stop_config": {"timeout": "soon"}}},
         "config.stop_config.timeout"),
    ],
)
def test_create_machine_rejects_bad_bodies_naming_the_field(
    client: httpx.Client, app: str, body: dict[str, Any], field: str
) -> None:
    r = client.post(f"/v1/apps/{app}/machines", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_invalid_json_is_400(client: httpx.Client, app: str) -> None:
    r = client.post(f"/v1/apps/{app}/machines", content=b"{nope",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_guest_from_size_preset(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, config={"size": "performance-2x"})
    assert m["config"]["guest"] == {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096}


def test_machine_names_are_unique_among_live_machines(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, name="worker-1")
    r = client.post(f"/v1/apps/{app}/machines", json={"name": "worker-1",
                                                      "config": {"image": "x"}})
    assert r.status_code == 409 and r.json()["status"] == "name_taken"
    client.delete(f"/v1/apps/{app}/machines/{m['id']}", params={"force": "true"})
    wait_state(client, app, m["id"], "destroyed")
    again = client.post(f"/v1/apps/{app}/machines", json={"name": "worker-1",
                                                          "config": {"image": "x"}})
    assert again.status_code == 200


# -- listing ---------------------------------------------------------------------------------------


def test_list_filters(client: httpx.Client, app: str) -> None:
    a = make_machine(client, app, config={"metadata": {"pool": "a", "job": "1"}})
    b = make_machine(client, app, config={"metadata": {"pool": "a", "job": "2"}}, region="ams")
    c = make_machine(client, app, config={"metadata": {"pool": "b"}}, skip_launch=True)
    wait_state(client, app, a["id"], "started")
    wait_state(client, app, b["id"], "started")

    def ids(**params: str) -> set[str]:
        r = client.get(f"/v1/apps/{app}/machines", params=params)
        assert r.status_code == 200
        return {m["id"] for m in r.json()}

    assert ids() == {a["id"], b["id"], c["id"]}
    assert ids(**{"metadata.pool": "a"}) == {a["id"], b["id"]}
    assert ids(**{"metadata.pool": "a", "metadata.job": "2"}) == {b["id"]}
    assert ids(**{"metadata.pool": "zzz"}) == set()
    assert ids(region="ams") == {b["id"]}
    assert ids(state="created") == {c["id"]}
    assert ids(state="created,started") == {a["id"], b["id"], c["id"]}
    client.delete(f"/v1/apps/{app}/machines/{c['id']}")
    wait_state(client, app, c["id"], "destroyed")
    assert ids() == {a["id"], b["id"]}
    assert ids(include_deleted="true") == {a["id"], b["id"], c["id"]}
    assert client.get(f"/v1/apps/{app}/machines", params={"state": "bogus"}).status_code == 400


def test_list_summary_omits_heavy_fields(client: httpx.Client, app: str) -> None:
    make_machine(client, app, config={"metadata": {"pool": "a"}, "env": {"SECRET": "x"}})
    full = client.get(f"/v1/apps/{app}/machines").json()[0]
    summary = client.get(f"/v1/apps/{app}/machines", params={"summary": "true"}).json()[0]
    assert "events" in full and full["config"]["env"] == {"SECRET": "x"}
    assert "events" not in summary and "checks" not in summary
    assert summary["config"] == {"image": "local/test:latest", "metadata": {"pool": "a"}}
    assert summary["id"] == full["id"] and summary["state"] == full["state"]


def test_summary_reflects_changes(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    url = f"/v1/apps/{app}/machines"
    assert client.get(url, params={"summary": "true"}).json()[0]["state"] == "created"
    client.post(f"{url}/{m['id']}/metadata/role", json={"value": "x"})
    client.post(f"{url}/{m['id']}/start")
    wait_state(client, app, m["id"], "started")
    row = client.get(url, params={"summary": "true"}).json()[0]
    assert row["state"] == "started" and row["config"]["metadata"] == {"role": "x"}


def test_a_listing_is_byte_for_byte_its_machines_as_shown_after_every_kind_of_change(
    client: httpx.Client, app: str
) -> None:
    # The list answer is joined from each machine's cached JSON: after any change it must be the
    # machines' current bodies, exactly as GET shows each of them.
    url = f"/v1/apps/{app}/machines"
    vol = client.post(f"/v1/apps/{app}/volumes",
                      json={"name": "data", "size_gb": 1, "region": "ams"}).json()

    def same(**params: str) -> None:
        listed = client.get(url, params=params)
        ids = [m["id"] for m in listed.json()]
        leases = {k: v for k, v in params.items() if k == "include_leases"}
        shown = [client.get(f"{url}/{i}", params=leases).content for i in ids]
        assert listed.content == b"[" + b",".join(shown) + b"]"

    plain = make_machine(client, app, skip_launch=True)  # no metadata in its config
    same()
    mounted = make_machine(client, app, config={"mounts": [{"volume": vol["id"]}]},
                           skip_launch=True)  # its mount and region are filled in at create
    same()
    client.get(f"{url}/{plain['id']}/metadata")  # reading the metadata creates it, empty
    same()
    client.post(f"{url}/{plain['id']}/metadata/role", json={"value": "a"})
    same()
    client.put(f"{url}/{plain['id']}/metadata", json={"metadata": {"role": None, "k": "v"}})
    same()
    client.delete(f"{url}/{plain['id']}/metadata/k")
    same()
    client.post(f"{url}/{plain['id']}/start")
    wait_state(client, app, plain["id"], "started")
    same()
    client.post(f"{url}/{plain['id']}/cordon")
    same()
    lease = client.post(f"{url}/{plain['id']}/lease", json={"ttl": 30}).json()["data"]
    nonce = {"fly-machine-lease-nonce": lease["nonce"]}
    same()
    same(include_leases="true")
    client.delete(f"{url}/{plain['id']}/lease", headers=nonce)
    client.post(f"{url}/{mounted['id']}", json={"config": {
        **mounted["config"], "env": {"NEW": "1"}}})  # an update: a new config and version
    same()
    client.post(f"{url}/{plain['id']}/stop")
    wait_state(client, app, plain["id"], "stopped")
    same()
    client.delete(f"{url}/{plain['id']}", params={"force": "true"})
    wait_state(client, app, plain["id"], "destroyed")
    same(include_deleted="true")
    same()


# -- metadata --------------------------------------------------------------------------------------


def test_metadata_endpoints(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, config={"metadata": {"a": "1"}}, skip_launch=True)
    base = f"/v1/apps/{app}/machines/{m['id']}/metadata"
    assert client.get(base).json() == {"a": "1"}
    r = client.post(f"{base}/b", json={"value": "2"})
    assert r.status_code == 204
    assert client.get(f"{base}/b").json() == {"value": "2"}
    assert client.get(f"{base}/zzz").status_code == 404
    r = client.put(base, json={"metadata": {"a": None, "c": "3"}})
    assert r.status_code == 204
    assert client.get(base).json() == {"b": "2", "c": "3"}
    r = client.patch(base, json={"metadata": {"b": ""}, "machine_version": m["instance_id"]})
    assert r.status_code == 204
    assert client.get(base).json() == {"c": "3"}
    stale = client.put(base, json={"metadata": {"x": "1"}, "machine_version": "01STALE"})
    assert stale.status_code == 412
    assert client.delete(f"{base}/c").status_code == 204
    assert client.get(base).json() == {}
    listed = client.get(f"/v1/apps/{app}/machines", params={"metadata.c": "3"}).json()
    assert listed == []


# -- leases ----------------------------------------------------------------------------------------


def test_lease_lifecycle(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app)
    wait_state(client, app, m["id"], "started")
    base = f"/v1/apps/{app}/machines/{m['id']}"
    assert client.get(base + "/lease").status_code == 404
    r = client.post(base + "/lease", json={"ttl": 30, "description": "deploy"})
    assert r.status_code == 201
    lease = r.json()
    assert lease["status"] == "success"
    data = lease["data"]
    assert re.fullmatch(r"[0-9a-f]{12}", data["nonce"])
    assert data["owner"] and data["description"] == "deploy"
    assert time.time() + 20 < data["expires_at"] <= time.time() + 31
    nonce = data["nonce"]

    held = client.post(base + "/lease", json={"ttl": 30})
    assert held.status_code == 409
    assert held.json()["status"] == "error"
    assert "lease currently held by" in held.json()["message"]
    # mutations need the nonce
    mutations: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/stop", {}), ("POST", "/cordon", {}), ("DELETE", "", {}),
        ("POST", "", {"json": {"config": {"image": "x"}}}), ("POST", "/restart", {}),
        ("POST", "/suspend", {}), ("POST", "/signal", {"json": {"signal": "SIGUSR1"}}),
        ("POST", "/metadata/k", {"json": {"value": "v"}}),
    ]
    for method, path, kwargs in mutations:
        r = client.request(method, base + path, **kwargs)
        assert r.status_code == 409, (method, path, r.text)
    assert client.get(base).status_code == 200  # reads do not
    header = {"fly-machine-lease-nonce": nonce}
    assert client.post(base + "/cordon", headers=header).status_code == 200
    refreshed = client.post(base + "/lease", params={"ttl": 120}, headers=header)
    assert refreshed.status_code == 201 and refreshed.json()["data"]["nonce"] == nonce
    assert refreshed.json()["data"]["expires_at"] > data["expires_at"]
    leased = client.get(base, params={"include_leases": "true"}).json()
    assert leased["lease"]["owner"] == data["owner"]
    assert "lease" not in client.get(base).json()
    assert client.delete(base + "/lease").status_code == 409
    released = client.delete(base + "/lease", headers=header)
    assert released.status_code == 200
    assert released.json() == {"status": "success", "data": {"ok": True}}
    assert client.get(base + "/lease").status_code == 404
    assert client.post(base + "/stop").status_code == 200


def test_create_with_lease_ttl_returns_nonce(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, lease_ttl=60, skip_launch=True)
    assert re.fullmatch(r"[0-9a-f]{12}", m["nonce"])
    base = f"/v1/apps/{app}/machines/{m['id']}"
    assert client.post(base + "/start").status_code == 409
    r = client.post(base + "/start", headers={"fly-machine-lease-nonce": m["nonce"]})
    assert r.status_code == 200
    assert "nonce" not in client.get(base).json()


def test_lease_owner_differs_per_token(local_api_factory: Callable[..., LocalAPIServer]) -> None:
    api = local_api_factory(runtime="sim", token="token-a", extra_tokens=("token-b",))
    with httpx.Client(base_url=api.url) as c:
        a = {"Authorization": "Bearer token-a"}
        b = {"Authorization": "Bearer token-b"}
        app = make_app(httpx.Client(base_url=api.url, headers=a))
        mid = c.post(f"/v1/apps/{app}/machines", json={"config": {"image": "x"}},
                     headers=a).json()["id"]
        first = c.post(f"/v1/apps/{app}/machines/{mid}/lease", headers=a).json()["data"]
        other = c.post(f"/v1/apps/{app}/machines/{mid}/lease", headers=b)
        assert other.status_code == 409 and first["owner"] in other.json()["message"]
        assert "token-a" not in first["owner"]


# -- wait ------------------------------------------------------------------------------------------


def test_wait_for_one_of_several_states(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    base = f"/v1/apps/{app}/machines/{m['id']}/wait"
    r = client.get(base, params=[("state", "started"), ("state", "settled"), ("timeout", "1")])
    assert r.status_code == 200 and r.json()["state"] == "created"
    r = client.get(base, params={"state": "started,settled", "timeout": 1})
    assert r.status_code == 200
    assert r.json()["ok"] is True and r.json()["version"] == m["instance_id"]


def test_wait_times_out_with_408(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    r = client.get(f"/v1/apps/{app}/machines/{m['id']}/wait",
                   params={"state": "started", "timeout": 1})
    assert r.status_code == 408 and "error" in r.json()


@pytest.mark.parametrize("timeout", ["0", "61", "abc"])
def test_wait_rejects_bad_timeouts(client: httpx.Client, app: str, timeout: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    r = client.get(f"/v1/apps/{app}/machines/{m['id']}/wait",
                   params={"state": "started", "timeout": timeout})
    assert r.status_code == 400 and "timeout" in r.json()["error"]


def test_wait_argument_errors(client: httpx.Client, app: str) -> None:
    m = make_machine(client, app, skip_launch=True)
    base = f"/v1/apps/{app}/machines/{m['id']}/wait"
    r = client.get(base, params={"state": "stopped"})
    assert r.status_code == 400 and "instance_id" in r.json()["error"]
    assert client.get(base, params={"state": "bogus"}).status_code == 400
    assert client.get(base, params={"state": "started", "version": "nope"}).status_code == 400


def test_wait_wakes_on_transition(client: httpx.Client, app: str, api: LocalAPIServer) -> None:
    m = make_machine(client, app, skip_launch=True)

    async def scenario() -> None:
        async with api.async_client(timeout=30) as ac:
            waiting = asyncio.create_task(ac.get(
                f"/v1/apps/{app}/machines/{m['id']}/wait",
                params={"state": "started", "timeout": 30}))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # parked: the machine is still created
            before = time.monotonic()
            await ac.post(f"/v1/apps/{app}/machines/{m['id']}/start")
            r = await waiting
            assert r.status_code == 200 and r.json()["state"] == "started"
            # woken by the transition, not by the end of its 30 s timeout
            assert time.monotonic() - before < 5

    asyncio.run(scenario())


# -- volumes ---------------------------------------------------------------------------------------


def test_volume_operations(client: httpx.Client, app: str) -> None:
    base = f"/v1/apps/{app}/volumes"
    r = client.post(base, json={"name": "data", "region": "ord", "size_gb": 3})
    assert r.status_code == 200
    vol = r.json()
    assert re.fullmatch(r"vol_[a-z0-9]{16}", vol["id"])
    assert vol["state"] == "created" and vol["size_gb"] == 3 and vol["encrypted"] is True
    assert [v["id"] for v in client.get(base).json()] == [vol["id"]]
    assert client.get(f"{base}/{vol['id']}").json()["name"] == "data"
    upd = client.put(f"{base}/{vol['id']}", json={"snapshot_retention": 10})
    assert upd.status_code == 200 and upd.json()["snapshot_retention"] == 10
    ext = client.put(f"{base}/{vol['id']}/extend", json={"size_gb": 10})
    assert ext.status_code == 200 and ext.json()["volume"]["size_gb"] == 10
    shrink = client.put(f"{base}/{vol['id']}/extend", json={"size_gb": 5})
    assert shrink.status_code == 400 and "size_gb" in shrink.json()["error"]
    assert client.post(f"{base}/{vol['id']}/snapshots").status_code == 200
    snaps = client.get(f"{base}/{vol['id']}/snapshots").json()
    assert len(snaps) == 1 and snaps[0]["status"] == "created"
    # attach
    m = make_machine(client, app, config={"mounts": [{"volume": vol["id"], "path": "/data"}]})
    assert client.get(f"{base}/{vol['id']}").json()["attached_machine_id"] == m["id"]
    second = client.post(f"/v1/apps/{app}/machines", json={
        "config": {"image": "x", "mounts": [{"volume": vol["id"], "path": "/data"}]}})
    assert second.status_code == 412
    assert client.delete(f"{base}/{vol['id']}").status_code == 412
    client.delete(f"/v1/apps/{app}/machines/{m['id']}", params={"force": "true"})
    wait_state(client, app, m["id"], "destroyed")
    deleted = client.delete(f"{base}/{vol['id']}")
    assert deleted.status_code == 200 and deleted.json()["state"] == "destroyed"
    assert client.get(base).json() == []
    assert client.get(f"{base}/vol_0000000000000000").status_code == 404


def test_volume_create_validates(client: httpx.Client, app: str) -> None:
    r = client.post(f"/v1/apps/{app}/volumes", json={"region": "ord"})
    assert r.status_code == 400 and r.json()["error"].startswith("name:")
    r = client.post(f"/v1/apps/{app}/volumes", json={"name": "d", "size_gb": "big"})
    assert r.status_code == 400 and "size_gb" in r.json()["error"]


def test_regions(client: httpx.Client) -> None:
    body = client.get("/v1/platform/regions").json()
    assert body["nearest"] == "ord"
    assert "iad" in {r["code"] for r in body["regions"]}
