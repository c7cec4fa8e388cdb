"""The quick-start conveniences: the MachineConfig builder and the synchronous FlyIOManager."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import scaler.fly
from scaler.fly import FlyIOManager, Machine, SizingError, spec
from scaler.fly import models as m
from scaler.fly.manager import MachineConfig, web_services


class Fly:
    """Records requests; answers like Fly for the few calls the manager makes."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/apps":
            return httpx.Response(201, json={"id": "app1", "created_at": 1})
        if path.endswith("/volumes"):
            return httpx.Response(200, json={"id": "vol_1", **json.loads(request.content)})
        body = json.loads(request.content)
        return httpx.Response(200, json={"id": "m1", "state": "created", **body})

    def body(self, n: int = -1) -> Any:
        return json.loads(self.requests[n].content)


@pytest.fixture
def fly() -> Fly:
    return Fly()


@pytest.fixture
def manager(fly: Fly) -> Iterator[FlyIOManager]:
    with FlyIOManager(api_token="tok", transport=httpx.MockTransport(fly)) as mgr:
        yield mgr


def test_one_name_per_class() -> None:
    assert scaler.fly.MachineConfig is MachineConfig
    assert scaler.fly.FlyMachineConfig is m.FlyMachineConfig
    assert not hasattr(m, "MachineConfig")


def test_worker_builder_to_request() -> None:
    builder = MachineConfig(
        image="my-worker:latest", name="background-worker", cpus=2, memory_mb=1024,
        cmd=["python", "worker.py"], env={"QUEUE_URL": "redis://..."}, restart_policy="always",
    )
    request = builder.to_request()
    assert isinstance(request, m.CreateMachineRequest)
    assert request.to_wire() == {
        "name": "background-worker",
        "config": {
            "image": "my-worker:latest",
            "guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024},
            "env": {"QUEUE_URL": "redis://..."},
            "init": {"cmd": ["python", "worker.py"]},
            "restart": {"policy": "always"},
        },
    }
    assert spec.validation_errors(request.to_wire(), "CreateMachineRequest") == []


def test_builder_with_everything_passes_the_spec() -> None:
    builder = MachineConfig(
        image="postgres:15", name="database", cpus=2, memory_mb=2048, cpu_kind="shared",
        mounts=[{"volume": "data", "path": "/var/lib/postgresql/data"}],
        env={"POSTGRES_PASSWORD": "secret"}, entrypoint=["/docker-entrypoint.sh"], port=5432,
        auto_destroy=False, region="iad", metadata={"role": "db"},
    )
    wire = builder.to_request().to_wire()
    assert wire["region"] == "iad"
    assert wire["config"]["mounts"] == [{"volume": "data", "path": "/var/lib/postgresql/data"}]
    assert wire["config"]["init"] == {"entrypoint": ["/docker-entrypoint.sh"]}
    assert wire["config"]["services"][0]["internal_port"] == 5432
    assert wire["config"]["metadata"] == {"role": "db"}
    assert spec.validation_errors(wire, "CreateMachineRequest") == []


def test_explicit_services_win_over_port() -> None:
    service = {"protocol": "udp", "internal_port": 53, "ports": [{"port": 53}]}
    wire = MachineConfig(image="dns", services=[service], port=8080).to_request().to_wire()
    assert wire["config"]["services"] == [service]


def test_builder_sizing_errors_name_the_field() -> None:
    with pytest.raises(SizingError) as info:
        MachineConfig(image="x", cpus=1, memory_mb=300).to_request()
    assert info.value.field == "MachineConfig.memory_mb"
    with pytest.raises(SizingError, match=r"MachineConfig\.cpus=3"):
        MachineConfig(image="x", cpus=3).to_request()


def test_builder_needs_an_image() -> None:
    with pytest.raises(ValueError, match=r"MachineConfig\.image is required"):
        MachineConfig(image="").to_request()


def test_web_services_route_80_and_443_to_the_app() -> None:
    (service,) = web_services(3000)
    assert service.internal_port == 3000 and service.protocol == "tcp"
    assert [(p.port, p.handlers) for p in service.ports or []] == [
        (80, ["http"]), (443, ["http", "tls"]),
    ]


def test_create_app(manager: FlyIOManager, fly: Fly) -> None:
    created = manager.create_app("my-web-app")
    assert created.id == "app1"
    assert fly.body() == {"name": "my-web-app", "org_slug": "personal"}
    assert fly.requests[-1].headers["authorization"] == "Bearer tok"


def test_launch_web_app(manager: FlyIOManager, fly: Fly) -> None:
    web = manager.launch_web_app(
        app_name="my-web-app", image="my-docker-image:latest", port=3000, region="iad",
        cpus=1, memory_mb=512,
    )
    assert isinstance(web, Machine)
    request = fly.requests[-1]
    assert (request.method, request.url.path) == ("POST", "/v1/apps/my-web-app/machines")
    body = fly.body()
    assert body["region"] == "iad"
    assert body["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512}
    ports = body["config"]["services"][0]["ports"]
    assert ports == [{"port": 80, "handlers": ["http"]}, {"port": 443, "handlers": ["http", "tls"]}]
    assert body["config"]["services"][0]["internal_port"] == 3000


def test_create_machine_with_builder_or_wire_config(manager: FlyIOManager, fly: Fly) -> None:
    manager.create_machine("app", MachineConfig(image="w", name="worker", cpus=2, memory_mb=1024))
    assert fly.body()["name"] == "worker"
    manager.create_machine("app", m.FlyMachineConfig(image="raw"))
    assert fly.body() == {"config": {"image": "raw"}}


def test_create_volume(manager: FlyIOManager, fly: Fly) -> None:
    volume = manager.create_volume(app_name="my-web-app", volume_name="data", size_gb=10,
                                   region="iad")
    assert volume.id == "vol_1"
    assert fly.requests[-1].url.path == "/v1/apps/my-web-app/volumes"
    assert fly.body() == {"name": "data", "size_gb": 10, "region": "iad"}


def test_manager_token_from_the_environment(monkeypatch: pytest.MonkeyPatch, fly: Fly) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "from-env")
    with FlyIOManager(transport=httpx.MockTransport(fly)) as manager:
        assert "from-env" not in repr(manager)
        manager.create_app("a")
    assert fly.requests[-1].headers["authorization"] == "Bearer from-env"


def test_manager_sizing_error_before_any_call(manager: FlyIOManager, fly: Fly) -> None:
    with pytest.raises(SizingError):
        manager.launch_web_app("app", "img", port=80, memory_mb=100)
    assert fly.requests == []
