"""The Fly clients over httpx.MockTransport: wire format, errors, retries, rate limits, creates."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from scaler.fly import (
    AsyncFlyClient,
    FlyClient,
    FlyMachineConfig,
    Lease,
    Machine,
    RetryPolicy,
    StartResponse,
    Volume,
    WaitResponse,
)
from scaler.fly import errors as fe
from scaler.fly.limits import LocalGovernor, classify, client_limit_for, limit_for
from scaler.fly.models import (
    App,
    CreateAppResponse,
    ExtendVolumeResponse,
    MachineEvent,
    MachineVersion,
    RegionsResponse,
    VolumeSnapshot,
)
from scaler.secret import Secret

CANARY = "fo1_CANARY_TOKEN_d41d8cd98f00b204"
MACHINE = {"id": "m1", "name": "web-1", "state": "started", "instance_id": "v1",
           "config": {"image": "nginx", "metadata": {"pool": "ci"}}}
VOLUME = {"id": "vol_1", "name": "data", "state": "created", "size_gb": 10}
LEASE = {"status": "success", "data": {"nonce": "n0", "expires_at": 1708569778, "owner": "me"}}

CANNED: dict[str, Any] = {
    "Apps_list": {"apps": [{"name": "a1"}], "total_apps": 1},
    "Apps_create": {"id": "app1", "created_at": 1708631799000},
    "Apps_show": {"id": "app1", "name": "a1", "organization": {"slug": "personal"}},
    "Machines_list": [MACHINE],
    "Machines_create": MACHINE,
    "Machines_show": MACHINE,
    "Machines_update": MACHINE,
    "Machines_start": {"previous_state": "stopped", "migrated": False, "new_host": ""},
    "Machines_wait": {"ok": True, "state": "stopped"},
    "Machines_list_events": [{"type": "launch", "status": "created", "timestamp": 1}],
    "Machines_list_versions": [{"version": "v1", "user_config": {"image": "nginx"}}],
    "Machines_show_metadata": {"pool": "ci"},
    "Machines_get_metadata_key": {"value": "ci"},
    "Machines_create_lease": LEASE,
    "Machines_show_lease": LEASE,
    "Volumes_list": [VOLUME],
    "Volumes_create": VOLUME,
    "Volumes_get_by_id": VOLUME,
    "Volumes_update": VOLUME,
    "Volume_delete": {**VOLUME, "state": "destroyed"},
    "Volumes_extend": {"volume": VOLUME, "needs_restart": False},
    "Volumes_list_snapshots": [{"id": "vs_1", "size": 1}],
    "Platform_regions_get": {"Regions": [{"code": "iad"}], "nearest": "iad"},
}
NO_CONTENT = {"Machines_update_metadata", "Machines_upsert_metadata", "Machines_delete_metadata"}


def canned(request: httpx.Request) -> httpx.Response:
    """What a well-behaved Fly answers (shapes only)."""
    action = classify(request.method, request.url.path).action
    if action in NO_CONTENT:
        return httpx.Response(204)
    return httpx.Response(200, json=CANNED.get(action, {"ok": True}))


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FreeGovernor:
    """A governor that never waits (to look at retry sleeps alone)."""

    def __init__(self) -> None:
        self.penalties: list[tuple[str, str, float | None]] = []

    async def acquire(self, action: str, scope: str) -> float:
        return 0.0

    def penalize(self, action: str, scope: str, retry_after: float | None) -> None:
        self.penalties.append((action, scope, retry_after))


class Recorder:
    """A MockTransport handler that records requests and answers from a script or ``canned``."""

    def __init__(self, *script: Callable[[httpx.Request], httpx.Response] | httpx.Response):
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            step = self.script.pop(0)
            return step(request) if callable(step) else step
        return canned(request)


def fast_client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> AsyncFlyClient:
    clock = kw.pop("clock", None) or FakeClock()
    kw.setdefault("governor", FreeGovernor())
    kw.setdefault("uniform", lambda low, high: high)
    return AsyncFlyClient(CANARY, transport=httpx.MockTransport(handler), clock=clock,
                          sleep=clock.sleep, **kw)


# --- every operation on the wire, through both clients -------------------------------------------

Q = list[tuple[str, str]]
OPS: list[tuple[str, Callable[[Any], Any], str, str, Q, Any, dict[str, str], type | None]] = [
    ("list_apps", lambda c: c.list_apps("personal"), "GET", "/v1/apps",
     [("org_slug", "personal")], None, {}, list),
    ("create_app", lambda c: c.create_app("a1", "personal"), "POST", "/v1/apps", [],
     {"name": "a1", "org_slug": "personal"}, {}, CreateAppResponse),
    ("get_app", lambda c: c.get_app("a1"), "GET", "/v1/apps/a1", [], None, {}, App),
    ("delete_app", lambda c: c.delete_app("a1", force=True), "DELETE", "/v1/apps/a1",
     [("force", "true")], None, {}, None),
    ("list_machines", lambda c: c.list_machines(
        "a1", include_deleted=True, region="iad", state=["started", "stopped"], summary=True,
        metadata={"pool": "ci", "job": "j1"}), "GET", "/v1/apps/a1/machines",
     [("include_deleted", "true"), ("region", "iad"), ("state", "started,stopped"),
      ("summary", "true"), ("metadata.pool", "ci"), ("metadata.job", "j1")], None, {}, list),
    ("list_machines_one_state", lambda c: c.list_machines("a1", state="started"), "GET",
     "/v1/apps/a1/machines", [("state", "started")], None, {}, list),
    ("create_machine", lambda c: c.create_machine(
        "a1", FlyMachineConfig(image="nginx"), name="n1", region="iad", skip_launch=True,
        lease_ttl=30, skip_service_registration=True), "POST", "/v1/apps/a1/machines", [],
     {"config": {"image": "nginx"}, "name": "n1", "region": "iad", "skip_launch": True,
      "lease_ttl": 30, "skip_service_registration": True}, {}, Machine),
    ("get_machine", lambda c: c.get_machine("a1", "m1", include_leases=True), "GET",
     "/v1/apps/a1/machines/m1", [("include_leases", "true")], None, {}, Machine),
    ("update_machine", lambda c: c.update_machine(
        "a1", "m1", FlyMachineConfig(image="nginx:2"), current_version="v1", skip_launch=True,
        nonce="n0"), "POST", "/v1/apps/a1/machines/m1", [],
     {"config": {"image": "nginx:2"}, "current_version": "v1", "skip_launch": True},
     {"fly-machine-lease-nonce": "n0"}, Machine),
    ("start_machine", lambda c: c.start_machine("a1", "m1", nonce="n0"), "POST",
     "/v1/apps/a1/machines/m1/start", [], None, {"fly-machine-lease-nonce": "n0"}, StartResponse),
    ("stop_machine", lambda c: c.stop_machine("a1", "m1", signal="SIGTERM", timeout=30,
                                              nonce="n0"),
     "POST", "/v1/apps/a1/machines/m1/stop", [], {"signal": "SIGTERM", "timeout": "30s"},
     {"fly-machine-lease-nonce": "n0"}, None),
    ("restart_machine", lambda c: c.restart_machine("a1", "m1", timeout=10, signal=15,
                                                    nonce="n0"),
     "POST", "/v1/apps/a1/machines/m1/restart", [("timeout", "10s"), ("signal", "SIGTERM")],
     None, {"fly-machine-lease-nonce": "n0"}, None),
    ("suspend_machine", lambda c: c.suspend_machine("a1", "m1", nonce="n0"), "POST",
     "/v1/apps/a1/machines/m1/suspend", [], None, {"fly-machine-lease-nonce": "n0"}, None),
    ("signal_machine", lambda c: c.signal_machine("a1", "m1", 9, nonce="n0"), "POST",
     "/v1/apps/a1/machines/m1/signal", [], {"signal": "SIGKILL"},
     {"fly-machine-lease-nonce": "n0"}, None),
    ("destroy_machine", lambda c: c.destroy_machine("a1", "m1", force=True, nonce="n0"),
     "DELETE", "/v1/apps/a1/machines/m1", [("force", "true")], None,
     {"fly-machine-lease-nonce": "n0"}, None),
    ("wait_machine", lambda c: c.wait_machine(
        "a1", "m1", ["stopped", "destroyed"], timeout=30, version="v1", from_event_id="e1"),
     "GET", "/v1/apps/a1/machines/m1/wait",
     [("state", "stopped,destroyed"), ("timeout", "30"), ("version", "v1"),
      ("instance_id", "v1"), ("from_event_id", "e1")], None, {}, WaitResponse),
    ("cordon_machine", lambda c: c.cordon_machine("a1", "m1", nonce="n0"), "POST",
     "/v1/apps/a1/machines/m1/cordon", [], None, {"fly-machine-lease-nonce": "n0"}, None),
    ("uncordon_machine", lambda c: c.uncordon_machine("a1", "m1"), "POST",
     "/v1/apps/a1/machines/m1/uncordon", [], None, {}, None),
    ("list_events", lambda c: c.list_events("a1", "m1", limit=5), "GET",
     "/v1/apps/a1/machines/m1/events", [("limit", "5")], None, {}, list),
    ("list_versions", lambda c: c.list_versions("a1", "m1"), "GET",
     "/v1/apps/a1/machines/m1/versions", [], None, {}, list),
    ("get_metadata", lambda c: c.get_metadata("a1", "m1"), "GET",
     "/v1/apps/a1/machines/m1/metadata", [], None, {}, dict),
    ("get_metadata_key", lambda c: c.get_metadata_key("a1", "m1", "pool"), "GET",
     "/v1/apps/a1/machines/m1/metadata/pool", [], None, {}, str),
    ("set_metadata_key", lambda c: c.set_metadata_key("a1", "m1", "pool", "ci", nonce="n0"),
     "POST", "/v1/apps/a1/machines/m1/metadata/pool", [], {"value": "ci"},
     {"fly-machine-lease-nonce": "n0"}, None),
    ("update_metadata", lambda c: c.update_metadata("a1", "m1", {"pool": "ci"},
                                                    machine_version="v1"),
     "PUT", "/v1/apps/a1/machines/m1/metadata", [],
     {"metadata": {"pool": "ci"}, "machine_version": "v1"}, {}, None),
    ("delete_metadata_key", lambda c: c.delete_metadata_key("a1", "m1", "pool"), "DELETE",
     "/v1/apps/a1/machines/m1/metadata/pool", [], None, {}, None),
    ("acquire_lease", lambda c: c.acquire_lease("a1", "m1", ttl=30, description="scaler"),
     "POST", "/v1/apps/a1/machines/m1/lease", [], {"ttl": 30, "description": "scaler"}, {},
     Lease),
    ("refresh_lease", lambda c: c.refresh_lease("a1", "m1", "n0", ttl=30), "POST",
     "/v1/apps/a1/machines/m1/lease", [], {"ttl": 30}, {"fly-machine-lease-nonce": "n0"}, Lease),
    ("get_lease", lambda c: c.get_lease("a1", "m1"), "GET", "/v1/apps/a1/machines/m1/lease", [],
     None, {}, Lease),
    ("release_lease", lambda c: c.release_lease("a1", "m1", "n0"), "DELETE",
     "/v1/apps/a1/machines/m1/lease", [], None, {"fly-machine-lease-nonce": "n0"}, None),
    ("create_volume", lambda c: c.create_volume("a1", "data", region="iad", size_gb=10), "POST",
     "/v1/apps/a1/volumes", [], {"name": "data", "region": "iad", "size_gb": 10}, {}, Volume),
    ("list_volumes", lambda c: c.list_volumes("a1", summary=True), "GET", "/v1/apps/a1/volumes",
     [("summary", "true")], None, {}, list),
    ("get_volume", lambda c: c.get_volume("a1", "vol_1"), "GET", "/v1/apps/a1/volumes/vol_1", [],
     None, {}, Volume),
    ("update_volume", lambda c: c.update_volume("a1", "vol_1", snapshot_retention=10), "PUT",
     "/v1/apps/a1/volumes/vol_1", [], {"snapshot_retention": 10}, {}, Volume),
    ("delete_volume", lambda c: c.delete_volume("a1", "vol_1"), "DELETE",
     "/v1/apps/a1/volumes/vol_1", [], None, {}, Volume),
    ("extend_volume", lambda c: c.extend_volume("a1", "vol_1", 20), "PUT",
     "/v1/apps/a1/volumes/vol_1/extend", [], {"size_gb": 20}, {}, ExtendVolumeResponse),
    ("list_snapshots", lambda c: c.list_snapshots("a1", "vol_1"), "GET",
     "/v1/apps/a1/volumes/vol_1/snapshots", [], None, {}, list),
    ("create_snapshot", lambda c: c.create_snapshot("a1", "vol_1"), "POST",
     "/v1/apps/a1/volumes/vol_1/snapshots", [], None, {}, None),
    ("list_regions", lambda c: c.list_regions(), "GET", "/v1/platform/regions", [], None, {},
     RegionsResponse),
]


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(kind: str) -> Iterator[Callable[..., Any]]:
    """Builds an AsyncFlyClient or a FlyClient over a MockTransport; closes them afterwards."""
    made: list[Any] = []

    def make(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> Any:
        cls = AsyncFlyClient if kind == "async" else FlyClient
        client = cls(CANARY, transport=httpx.MockTransport(handler), **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        if isinstance(client, FlyClient):
            client.close()


async def call(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize(
    ("name", "invoke", "method", "path", "query", "body", "headers", "returns"),
    OPS, ids=[op[0] for op in OPS],
)
async def test_every_operation_on_the_wire(
    make_client: Callable[..., Any], name: str, invoke: Callable[[Any], Any], method: str,
    path: str, query: Q, body: Any, headers: dict[str, str], returns: type | None,
) -> None:
    rec = Recorder()
    client = make_client(rec)
    result = await call(invoke(client))
    (request,) = rec.requests
    assert (request.method, request.url.path) == (method, path)
    assert list(request.url.params.multi_items()) == query
    sent = json.loads(request.content) if request.content else None
    assert sent == body
    for key, value in headers.items():
        assert request.headers[key] == value
    if not headers:
        assert "fly-machine-lease-nonce" not in request.headers
    assert request.headers["authorization"] == f"Bearer {CANARY}"
    assert request.extensions["timeout"]["read"] is not None
    if returns is None:
        assert result is None
    else:
        assert isinstance(result, returns)


async def test_list_results_are_typed() -> None:
    async with fast_client(Recorder()) as fly:
        assert isinstance((await fly.list_machines("a1"))[0], Machine)
        assert isinstance((await fly.list_events("a1", "m1"))[0], MachineEvent)
        assert isinstance((await fly.list_versions("a1", "m1"))[0], MachineVersion)
        assert isinstance((await fly.list_snapshots("a1", "v"))[0], VolumeSnapshot)
        assert (await fly.list_apps())[0].name == "a1"
        assert (await fly.list_regions()).regions[0].code == "iad"
        assert (await fly.get_lease("a1", "m1")).nonce == "n0"


# --- configuration ------------------------------------------------------------------------------


async def test_token_and_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", CANARY)
    monkeypatch.setenv("FLY_API_URL", "http://_api.internal:4280")
    rec = Recorder()
    async with AsyncFlyClient(transport=httpx.MockTransport(rec)) as fly:
        await fly.get_app("a1")
    assert str(rec.requests[0].url) == "http://_api.internal:4280/v1/apps/a1"
    assert rec.requests[0].headers["authorization"] == f"Bearer {CANARY}"


async def test_constructor_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "env-token")
    monkeypatch.setenv("FLY_API_URL", "http://env.invalid")
    rec = Recorder()
    client = AsyncFlyClient(Secret("arg-token"), base_url="https://api.machines.dev/v1/",
                            transport=httpx.MockTransport(rec))
    async with client as fly:
        await fly.get_app("a1")
    assert str(rec.requests[0].url) == "https://api.machines.dev/v1/apps/a1"
    assert rec.requests[0].headers["authorization"] == "Bearer arg-token"


async def test_default_url_and_macaroon_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLY_API_URL", raising=False)
    rec = Recorder()
    async with AsyncFlyClient("FlyV1 fm2_abc", transport=httpx.MockTransport(rec)) as fly:
        await fly.get_app("a1")
    assert str(rec.requests[0].url) == "https://api.machines.dev/v1/apps/a1"
    assert rec.requests[0].headers["authorization"] == "FlyV1 fm2_abc"


def test_missing_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="FLY_API_TOKEN"):
        AsyncFlyClient()


def test_bad_base_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"base_url='api\.machines\.dev'"):
        AsyncFlyClient("t", base_url="api.machines.dev")


async def test_timeouts_on_every_call_and_longer_for_wait() -> None:
    rec = Recorder()
    async with fast_client(rec, timeout=7.0) as fly:
        await fly.get_machine("a1", "m1")
        await fly.wait_machine("a1", "m1", "started", timeout=60)
    assert rec.requests[0].extensions["timeout"]["read"] == 7.0
    assert rec.requests[1].extensions["timeout"]["read"] > 60


@pytest.mark.parametrize(
    ("seconds", "wire"), [(30, "30s"), (90, "1m30s"), (0.5, "500ms"), (1_000_000, "277h46m40s")]
)
async def test_stop_timeout_seconds_become_a_go_duration(seconds: float, wire: str) -> None:
    rec = Recorder()
    async with fast_client(rec) as fly:
        await fly.stop_machine("a1", "m1", timeout=seconds)
        with pytest.raises(ValueError, match="must be seconds"):
            await fly.stop_machine("a1", "m1", timeout=float("inf"))
    assert json.loads(rec.requests[0].content) == {"timeout": wire}


@pytest.mark.parametrize("seconds", [0, 61, 2.5, -1])
async def test_wait_timeout_is_validated_before_sending(seconds: Any) -> None:
    rec = Recorder()
    async with fast_client(rec) as fly:
        with pytest.raises(ValueError, match=r"timeout=.* 1 to 60"):
            await fly.wait_machine("a1", "m1", "started", timeout=seconds)
        with pytest.raises(ValueError, match="state='running'"):
            await fly.wait_machine("a1", "m1", "running")
    assert rec.requests == []


def test_sync_client_runs_on_its_own_thread_and_closes() -> None:
    rec = Recorder()
    before = threading.active_count()
    with FlyClient(CANARY, transport=httpx.MockTransport(rec)) as fly:
        assert fly.get_machine("a1", "m1").id == "m1"
        assert threading.active_count() > before
    assert threading.active_count() == before
    with pytest.raises(RuntimeError, match="closed"):
        fly.get_machine("a1", "m1")


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, {"error": "bad"}, fe.BadRequest),
        (401, {"error": "Authenticate: token validation error"}, fe.Unauthorized),
        (403, {"error": "nope"}, fe.Forbidden),
        (404, {"error": "machine not found"}, fe.NotFound),
        (409, {"status": "error", "message": "lease currently held by x"}, fe.Conflict),
        (412, {"error": "unable to start machine from current state"}, fe.PreconditionFailed),
        (422, {"error": "invalid"}, fe.Unprocessable),
        (422, {"error": "taken", "status": "name_taken"}, fe.NameTaken),
        (422, {"error": "To create more than 1 machine per app please add a payment method"},
         fe.MachineLimit),
        (412, {"error": "no room", "status": "insufficient_capacity"}, fe.InsufficientCapacity),
        (400, {"error": "no room", "status": "volume_placement_capacity"}, fe.InsufficientCapacity),
        (418, {"error": "teapot"}, fe.FlyAPIError),
    ],
)
async def test_error_statuses_map_to_the_hierarchy(status: int, body: Any, cls: type) -> None:
    response = httpx.Response(status, json=body, headers={"fly-request-id": "01JREQ-iad"})
    async with fast_client(Recorder(response)) as fly:
        with pytest.raises(fe.FlyAPIError) as info:
            await fly.get_machine("a1", "m1")
    exc = info.value
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.error == (body.get("error") or body.get("message"))
    assert exc.fly_status == body.get("status")
    assert exc.request_id == "01JREQ-iad"
    assert exc.action == "Machines_show"
    assert "01JREQ-iad" in str(exc) and "Machines_show" in str(exc)


async def test_server_errors_and_request_timeouts_after_retries() -> None:
    async with fast_client(Recorder(*[httpx.Response(503, text="upstream")] * 5)) as fly:
        with pytest.raises(fe.ServerError) as info:
            await fly.get_machine("a1", "m1")
    assert info.value.error == "upstream"
    async with fast_client(Recorder(*[httpx.Response(408)] * 5)) as fly:
        with pytest.raises(fe.RequestTimeout):
            await fly.get_machine("a1", "m1")


@pytest.mark.parametrize(("header", "expected"), [("2", 2.0), ("0.5", 0.5), (None, None)])
async def test_rate_limited_reads_retry_after(header: str | None, expected: float | None) -> None:
    headers = {"retry-after": header} if header else {}
    response = httpx.Response(429, json={"error": "rate limit exceeded"}, headers=headers)
    async with fast_client(Recorder(response), retry=RetryPolicy(max_attempts=1)) as fly:
        with pytest.raises(fe.RateLimited) as info:
            await fly.get_machine("a1", "m1")
    assert info.value.retry_after == expected


async def test_the_token_never_shows(kind: str, make_client: Callable[..., Any]) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset by peer", request=request)

    shown: list[str] = []
    for handler in (Recorder(httpx.Response(401, json={"error": "bad token"})), boom):
        client = make_client(handler, retry=RetryPolicy(max_attempts=1))
        shown += [repr(client), str(client)]
        with pytest.raises(fe.FlyError) as info:
            await call(client.get_machine("a1", "m1"))
        exc: BaseException | None = info.value
        while exc is not None:  # the whole chain, as a traceback would print it
            shown += [str(exc), repr(exc)]
            exc = exc.__cause__ or exc.__context__
    assert shown and not any(CANARY in text for text in shown)
    assert any("ReadError" in text for text in shown)


async def test_transport_errors_do_not_carry_the_request() -> None:
    async with fast_client(Recorder(_drop), retry=RetryPolicy(max_attempts=1)) as fly:
        with pytest.raises(fe.FlyTransportError) as info:
            await fly.get_machine("a1", "m1")
    assert info.value.__cause__ is None and info.value.__context__ is None


# --- retries ------------------------------------------------------------------------------------


async def test_reads_retry_with_exponential_full_jitter_backoff() -> None:
    clock = FakeClock()
    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return high / 2

    seen: list[tuple[str, int | None]] = []
    rec = Recorder(httpx.Response(503), httpx.Response(502), httpx.Response(500))
    client = fast_client(rec, clock=clock, uniform=uniform,
                         observer=lambda a, s, sec: seen.append((a, s)),
                         retry=RetryPolicy(base=1.0, cap=3.0, max_attempts=5, max_elapsed=60))
    async with client as fly:
        machine = await fly.get_machine("a1", "m1")
    assert machine.id == "m1"
    assert bounds == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
    assert clock.sleeps == [0.5, 1.0, 1.5]
    assert seen == [("Machines_show", 503), ("Machines_show", 502), ("Machines_show", 500),
                    ("Machines_show", 200)]


async def test_retries_stop_at_max_attempts() -> None:
    rec = Recorder(*[httpx.Response(503)] * 10)
    async with fast_client(rec, retry=RetryPolicy(max_attempts=3, max_elapsed=1000)) as fly:
        with pytest.raises(fe.ServerError):
            await fly.get_machine("a1", "m1")
    assert len(rec.requests) == 3


async def test_a_call_may_bring_its_own_retry_policy() -> None:
    rec = Recorder(*[httpx.Response(429, headers={"retry-after": "0"})] * 10)
    async with fast_client(rec, retry=RetryPolicy(max_attempts=8, max_elapsed=1000)) as fly:
        with pytest.raises(fe.RateLimited):
            await fly.create_machine("a1", FlyMachineConfig(image="x"), name="n",
                                     retry=RetryPolicy(max_attempts=2))
    assert len(rec.requests) == 2  # not the client's 8


async def test_retries_stop_at_max_elapsed() -> None:
    rec = Recorder(*[httpx.Response(503)] * 10)
    policy = RetryPolicy(max_attempts=10, max_elapsed=3.0, base=1.0, cap=100)
    clock = FakeClock()
    async with fast_client(rec, retry=policy, clock=clock) as fly:
        with pytest.raises(fe.ServerError):
            await fly.get_machine("a1", "m1")
    assert clock.sleeps == [1.0, 2.0]  # the next (4 s) would end past the 3 s budget
    assert len(rec.requests) == 3


async def test_429_waits_retry_after_and_penalizes_the_governor() -> None:
    clock = FakeClock()
    governor = FreeGovernor()
    rec = Recorder(httpx.Response(429, headers={"retry-after": "5"}))
    async with fast_client(rec, clock=clock, governor=governor) as fly:
        await fly.stop_machine("a1", "m1")
    assert clock.sleeps == [5.0]
    assert governor.penalties == [("Machines_stop", "machine:m1", 5.0)]
    assert len(rec.requests) == 2


async def test_wait_408_is_returned_not_retried() -> None:
    rec = Recorder(httpx.Response(408, json={"error": "deadline exceeded"}))
    async with fast_client(rec) as fly:
        with pytest.raises(fe.RequestTimeout):
            await fly.wait_machine("a1", "m1", "started", timeout=5)
    assert len(rec.requests) == 1


async def test_wait_retries_5xx() -> None:
    rec = Recorder(httpx.Response(502))
    async with fast_client(rec) as fly:
        assert (await fly.wait_machine("a1", "m1", timeout=5)).ok is True
    assert len(rec.requests) == 2


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _drop(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadError("connection reset by peer", request=request)


@pytest.mark.parametrize(
    ("invoke", "first", "attempts"),
    [
        (lambda f: f.restart_machine("a1", "m1"), httpx.Response(503), 1),
        (lambda f: f.signal_machine("a1", "m1", "SIGUSR1"), httpx.Response(408), 1),
        (lambda f: f.restart_machine("a1", "m1"), _drop, 1),
        (lambda f: f.restart_machine("a1", "m1"), _refuse, 2),
        (lambda f: f.restart_machine("a1", "m1"), httpx.Response(429), 2),
        (lambda f: f.create_volume("a1", "data"), httpx.Response(500), 1),
        (lambda f: f.stop_machine("a1", "m1"), httpx.Response(503), 2),
        (lambda f: f.stop_machine("a1", "m1"), _drop, 2),
        (lambda f: f.destroy_machine("a1", "m1"), httpx.Response(408), 2),
        (lambda f: f.set_metadata_key("a1", "m1", "k", "v"), httpx.Response(500), 2),
    ],
    ids=["restart-503", "signal-408", "restart-dropped", "restart-refused", "restart-429",
         "create-volume-500", "stop-503", "stop-dropped", "destroy-408", "metadata-500"],
)
async def test_what_is_safe_to_repeat(invoke: Callable[[Any], Any], first: Any,
                                      attempts: int) -> None:
    rec = Recorder(first)
    async with fast_client(rec) as fly:
        if attempts == 1:
            with pytest.raises(fe.FlyError):
                await invoke(fly)
        else:
            await invoke(fly)
    assert len(rec.requests) == attempts


async def test_transport_errors_say_whether_the_request_was_sent() -> None:
    seen: list[tuple[str, int | None]] = []
    for handler, sent in ((_refuse, False), (_drop, True)):
        client = fast_client(Recorder(*[handler] * 5), retry=RetryPolicy(max_attempts=2),
                             observer=lambda a, s, sec: seen.append((a, s)))
        async with client as fly:
            with pytest.raises(fe.FlyTransportError) as info:
                await fly.restart_machine("a1", "m1")
        assert info.value.sent is sent
    assert seen[0] == ("Machines_restart", None)


async def test_an_unexpected_body_is_a_fly_error_without_the_values() -> None:
    rec = Recorder(httpx.Response(200, json=[{"env": {"SECRET": "hunter2"}}]))
    async with fast_client(rec) as fly:
        with pytest.raises(fe.FlyError, match="expected shape") as info:
            await fly.get_machine("a1", "m1")
    assert "hunter2" not in str(info.value)


# --- ambiguous creates --------------------------------------------------------------------------


class FakeFly:
    """Just enough of Fly to create and list machines, with a fault for the next create."""

    def __init__(self, create_fault: Callable[[httpx.Request], httpx.Response] | None = None,
                 create_then: httpx.Response | type[Exception] | None = None) -> None:
        self.machines: list[dict[str, Any]] = []
        self.create_fault = create_fault
        self.create_then = create_then
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            if self.create_fault is not None:
                fault, self.create_fault = self.create_fault, None
                return fault(request)
            body = json.loads(request.content)
            if body.get("name") and any(m["name"] == body["name"] for m in self.machines):
                return httpx.Response(409, json={"error": "machine name already taken"})
            machine = {"id": f"m{len(self.machines) + 1}", "name": body.get("name") or "gen",
                       "state": "created", "config": body["config"],
                       "created_at": f"2024-01-01T00:00:0{len(self.machines)}Z"}
            self.machines.append(machine)
            then, self.create_then = self.create_then, None
            if isinstance(then, httpx.Response):
                return then
            if then is not None:
                raise then("connection reset after sending", request=request)  # type: ignore[call-arg]
            return httpx.Response(200, json=machine)
        wanted = {k[len("metadata."):]: v for k, v in request.url.params.items()
                  if k.startswith("metadata.")}
        found = [m for m in self.machines
                 if wanted.items() <= (m["config"].get("metadata") or {}).items()]
        return httpx.Response(200, json=found)

    def posts(self) -> int:
        return sum(r.method == "POST" for r in self.requests)


async def test_create_answered_408_is_found_by_name() -> None:
    fly = FakeFly(create_then=httpx.Response(408, json={"error": "deadline exceeded"}))
    async with fast_client(fly) as client:
        machine = await client.create_machine("a1", FlyMachineConfig(image="x"), name="job-1")
    assert (machine.id, machine.name) == ("m1", "job-1")
    assert fly.posts() == 1 and len(fly.machines) == 1
    lookup = fly.requests[1]
    # destroyed machines count as found: a short job's machine may be gone by the lookup
    assert lookup.method == "GET" and lookup.url.params["include_deleted"] == "true"


async def test_create_with_dropped_connection_is_found_by_metadata() -> None:
    fly = FakeFly(create_then=httpx.ReadError)
    config = FlyMachineConfig(image="x", metadata={"fly_scaler_job": "j-42", "pool": "ci"})
    async with fast_client(fly) as client:
        machine = await client.create_machine("a1", config)
    assert machine.id == "m1" and fly.posts() == 1
    assert fly.requests[1].url.params["metadata.fly_scaler_job"] == "j-42"
    assert fly.requests[1].url.params["metadata.pool"] == "ci"


async def test_create_that_did_not_happen_is_retried_once_not_found() -> None:
    fly = FakeFly(create_fault=lambda r: httpx.Response(503, json={"error": "unavailable"}))
    async with fast_client(fly) as client:
        machine = await client.create_machine("a1", FlyMachineConfig(image="x"), name="job-2")
    assert machine.name == "job-2"
    assert [r.method for r in fly.requests] == ["POST", "GET", "POST"]
    assert len(fly.machines) == 1


async def test_create_without_name_or_metadata_is_ambiguous() -> None:
    fly = FakeFly(create_then=httpx.Response(408))
    async with fast_client(fly) as client:
        with pytest.raises(fe.AmbiguousCreate, match="no name or metadata"):
            await client.create_machine("a1", FlyMachineConfig(image="x"))
    assert fly.posts() == 1


async def test_create_whose_lookup_fails_is_ambiguous() -> None:
    rec = Recorder(httpx.Response(500), *[httpx.Response(401)] * 3)
    async with fast_client(rec) as client:
        with pytest.raises(fe.AmbiguousCreate, match="looking it up by name 'job-3' failed"):
            await client.create_machine("a1", FlyMachineConfig(image="x"), name="job-3")
    assert [r.method for r in rec.requests] == ["POST", "GET"]


async def test_a_conflict_after_an_unknown_outcome_is_resolved_by_lookup() -> None:
    listings = iter([[], [MACHINE]])  # not visible yet, then there (eventual consistency)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=next(listings))
        posts = sum(r.method == "POST" for r in rec.requests)
        return httpx.Response(504) if posts == 1 else httpx.Response(409, json={"error": "taken"})

    rec = Recorder(*[handler] * 4)
    async with fast_client(rec) as client:
        machine = await client.create_machine("a1", FlyMachineConfig(image="x"), name="web-1")
    assert machine.id == "m1"
    assert [r.method for r in rec.requests] == ["POST", "GET", "POST", "GET"]


async def test_a_plain_create_conflict_is_not_looked_up() -> None:
    rec = Recorder(httpx.Response(409, json={"error": "taken"}))
    async with fast_client(rec) as client:
        with pytest.raises(fe.Conflict):
            await client.create_machine("a1", FlyMachineConfig(image="x"), name="web-1")
    assert len(rec.requests) == 1


async def test_a_create_that_may_exist_looks_up_a_plain_conflict() -> None:
    # An earlier process's create of this name landed: the conflict is that machine, not an error.
    rec = Recorder(httpx.Response(409, json={"error": "taken"}))
    async with fast_client(rec) as client:
        machine = await client.create_machine("a1", FlyMachineConfig(image="x"), name="web-1",
                                              may_exist=True)
    assert machine.id == "m1"
    assert [r.method for r in rec.requests] == ["POST", "GET"]
    assert rec.requests[1].url.params["include_deleted"] == "true"


async def test_a_create_that_may_exist_raises_a_conflict_nobody_owns() -> None:
    rec = Recorder(httpx.Response(409, json={"error": "taken"}), httpx.Response(200, json=[]))
    async with fast_client(rec) as client:
        with pytest.raises(fe.Conflict):
            await client.create_machine("a1", FlyMachineConfig(image="x"), name="web-1",
                                        may_exist=True)
    assert [r.method for r in rec.requests] == ["POST", "GET"]


async def test_a_create_that_may_exist_does_not_look_up_a_refusal() -> None:
    rec = Recorder(httpx.Response(422, json={"error": "bad guest"}))
    async with fast_client(rec) as client:
        with pytest.raises(fe.Unprocessable):
            await client.create_machine("a1", FlyMachineConfig(image="x"), name="web-1",
                                        may_exist=True)
    assert len(rec.requests) == 1


async def test_sync_client_resolves_creates_too() -> None:
    fly = FakeFly(create_then=httpx.Response(408))
    with FlyClient(CANARY, transport=httpx.MockTransport(fly), governor=FreeGovernor(),
                   uniform=lambda a, b: 0.0) as client:
        machine = client.create_machine("a1", FlyMachineConfig(image="x"), name="job-9")
    assert machine.name == "job-9" and fly.posts() == 1


# --- rate limiting ------------------------------------------------------------------------------


async def test_a_burst_of_creates_waits_for_the_governor() -> None:
    clock = FakeClock()
    waits: list[tuple[str, float]] = []
    client = fast_client(Recorder(), clock=clock,
                         governor=LocalGovernor(clock, clock.sleep, limit_for),
                         wait_observer=lambda a, s: waits.append((a, s)))
    async with client as fly:
        for n in range(5):
            await fly.create_machine("a1", FlyMachineConfig(image="x"), name=f"n{n}")
    assert clock.now >= 2.0 - 1e-9
    assert [a for a, _ in waits] == ["Machines_create", "Machines_create"]


async def test_get_machine_bursts_do_not_wait() -> None:
    clock = FakeClock()
    client = fast_client(Recorder(), clock=clock,
                         governor=LocalGovernor(clock, clock.sleep, limit_for))
    async with client as fly:
        for _ in range(10):
            await fly.get_machine("a1", "m1")
    assert clock.now == 0.0 and clock.sleeps == []


async def test_default_governor_uses_the_injected_clock_and_keeps_a_token_of_slack() -> None:
    # Fly allows a burst of 3 starts; the client spends 2, so jitter never turns into a 429.
    assert client_limit_for("Machines_start").burst == limit_for("Machines_start").burst - 1
    clock = FakeClock()
    async with AsyncFlyClient(CANARY, transport=httpx.MockTransport(Recorder()), clock=clock,
                              sleep=clock.sleep) as fly:
        for _ in range(3):
            await fly.start_machine("a1", "m1")
    assert clock.sleeps == [1.0]


async def test_a_429_slows_the_next_calls() -> None:
    clock = FakeClock()
    waits: list[tuple[str, float]] = []
    rec = Recorder(httpx.Response(429, headers={"retry-after": "3"}))
    client = fast_client(rec, clock=clock, governor=LocalGovernor(clock, clock.sleep, limit_for),
                         uniform=lambda a, b: 0.0, wait_observer=lambda a, s: waits.append((a, s)))
    async with client as fly:
        await fly.get_machine("a1", "m1")
    assert clock.now >= 3.0  # the penalty drained the bucket; the retry waited for it
    # Get Machine bursts to 10, so only the drained bucket (not the retry's sleep) makes it wait.
    assert [a for a, _ in waits] == ["Machines_show"]
