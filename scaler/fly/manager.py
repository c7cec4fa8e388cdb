"""A quick-start builder and a synchronous manager, for creating apps and machines in a few lines.

::

    manager = FlyIOManager(api_token="...")
    manager.create_app("my-web-app")
    manager.launch_web_app("my-web-app", "my-image:latest", port=3000, region="iad", memory_mb=512)
    manager.create_machine("my-web-app", MachineConfig(image="worker:latest", cpus=2,
                           memory_mb=1024, cmd=["python", "worker.py"], restart_policy="always"))

:class:`MachineConfig` takes flat fields; :meth:`MachineConfig.to_request` turns it into the
typed ``CreateMachineRequest`` whose ``config`` is a :class:`~scaler.fly.models.FlyMachineConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from scaler.fly import models
from scaler.fly.client import FlyClient
from scaler.fly.sizing import guest_for
from scaler.secret import Secret

__all__ = ["FlyIOManager", "MachineConfig", "web_services"]


def web_services(internal_port: int) -> list[models.MachineService]:
    """Public HTTP on 80 and HTTPS (TLS terminated by Fly) on 443, routed to ``internal_port``."""
    return [
        models.MachineService(
            protocol="tcp",
            internal_port=internal_port,
            ports=[
                models.MachinePort(port=80, handlers=["http"]),
                models.MachinePort(port=443, handlers=["http", "tls"]),
            ],
        )
    ]


@dataclass
class MachineConfig:
    """A machine described with flat fields (image, size, command, env, ports), built into a
    create request by :meth:`to_request`.

    ``port`` adds the standard web services (see :func:`web_services`) unless ``services`` is
    given. ``cpus``/``memory_mb``/``cpu_kind`` are checked against Fly's sizing rules by
    :meth:`to_request`.
    """

    image: str
    name: str | None = None
    cpus: int = 1
    memory_mb: int = 256
    cpu_kind: str = "shared"
    env: Mapping[str, str] | None = None
    cmd: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    mounts: Sequence[models.Mount | Mapping[str, Any]] | None = None
    services: Sequence[models.MachineService | Mapping[str, Any]] | None = None
    port: int | None = None
    restart_policy: str | None = None
    auto_destroy: bool | None = None
    region: str | None = None
    metadata: Mapping[str, str] | None = None

    def to_request(self) -> models.CreateMachineRequest:
        """The typed create request (raises :class:`~scaler.fly.sizing.SizingError` or
        ValueError naming the field when something would be refused)."""
        if not self.image:
            raise ValueError("MachineConfig.image is required: the Docker image to run")
        guest = guest_for(
            cpus=self.cpus, memory_mb=self.memory_mb, cpu_kind=self.cpu_kind,
            field="MachineConfig",
        )
        init = None
        if self.cmd or self.entrypoint:
            init = models.MachineInit(
                cmd=list(self.cmd) if self.cmd else None,
                entrypoint=list(self.entrypoint) if self.entrypoint else None,
            )
        services: list[models.MachineService] | None = None
        if self.services is not None:
            services = [models.MachineService.model_validate(s) for s in self.services]
        elif self.port is not None:
            services = web_services(self.port)
        config = models.FlyMachineConfig(
            image=self.image,
            guest=guest,
            env=dict(self.env) if self.env else None,
            init=init,
            services=services,
            mounts=[models.Mount.model_validate(m) for m in self.mounts] if self.mounts else None,
            restart=models.Restart(policy=self.restart_policy) if self.restart_policy else None,
            auto_destroy=self.auto_destroy,
            metadata=dict(self.metadata) if self.metadata else None,
        )
        return models.CreateMachineRequest(config=config, name=self.name, region=self.region)


class FlyIOManager:
    """A synchronous manager for the common cases, on top of :class:`~scaler.fly.client.FlyClient`.

    ``api_token`` defaults to ``FLY_API_TOKEN`` and ``base_url`` to ``FLY_API_URL`` (or
    ``https://api.machines.dev``). ``client`` is the underlying FlyClient for everything else.
    """

    def __init__(
        self,
        api_token: str | Secret | None = None,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.client = FlyClient(api_token, base_url=base_url, transport=transport)

    def create_app(self, name: str, org_slug: str = "personal") -> models.CreateAppResponse:
        """Create an app in ``org_slug``."""
        return self.client.create_app(name, org_slug)

    def create_machine(
        self,
        app_name: str,
        config: MachineConfig | models.FlyMachineConfig | models.CreateMachineRequest,
    ) -> models.Machine:
        """Create a machine from the builder (or a create request). A mount may name its volume
        by name: it is resolved to the volume's id (see :meth:`_resolve_volumes`)."""
        if isinstance(config, MachineConfig):
            request = config.to_request()
        elif isinstance(config, models.FlyMachineConfig):
            request = models.CreateMachineRequest(config=config)
        else:
            request = config
        return self.client.create_machine(app_name, self._resolve_volumes(app_name, request))

    def _resolve_volumes(
        self, app_name: str, request: models.CreateMachineRequest
    ) -> models.CreateMachineRequest:
        """Mounts may name a volume (``{"volume": "data", ...}``) where Fly wants its id: look
        the name up among the app's volumes, in the machine's region when it has one. A machine
        without a region goes where its volume is (a volume cannot move)."""
        mounts = request.config.mounts or []
        named = [m for m in mounts if m.volume and not m.volume.startswith("vol_")]
        if not named:
            return request
        volumes = [v for v in self.client.list_volumes(app_name)
                   if v.state not in ("destroyed", "pending_destroy", "destroying")]
        region = request.region
        resolved = []
        for m in mounts:
            if not any(m is n for n in named):
                resolved.append(m)
                continue
            same = [v for v in volumes if v.name == m.volume
                    and (region is None or v.region == region)]
            where = f"app {app_name!r}" + (f", region {region!r}" if region else "")
            if not same:
                raise ValueError(
                    f"mounts: no volume named {m.volume!r} in {where}; create it first "
                    f"(manager.create_volume({app_name!r}, {m.volume!r}, region=...)) or pass "
                    "its id (vol_...)")
            if len(same) > 1:
                ids = ", ".join(str(v.id) for v in same)
                raise ValueError(
                    f"mounts: {len(same)} volumes named {m.volume!r} in {where} ({ids}); pass "
                    "the id of the one to mount" + ("" if region else ", or a region"))
            region = region or same[0].region
            resolved.append(m.model_copy(update={"volume": same[0].id}))
        config = request.config.model_copy(update={"mounts": resolved})
        return request.model_copy(update={"config": config, "region": region})

    def launch_web_app(
        self,
        app_name: str,
        image: str,
        port: int = 8080,
        region: str | None = None,
        cpus: int = 1,
        memory_mb: int = 256,
        name: str | None = None,
    ) -> models.Machine:
        """A web server machine: 80 (http) and 443 (http+tls) routed to ``port``."""
        builder = MachineConfig(
            image=image, name=name, cpus=cpus, memory_mb=memory_mb, port=port, region=region
        )
        return self.create_machine(app_name, builder)

    def create_volume(
        self, app_name: str, volume_name: str, size_gb: int = 1, region: str | None = None
    ) -> models.Volume:
        """Create a volume named ``volume_name``."""
        return self.client.create_volume(app_name, volume_name, size_gb=size_gb, region=region)

    def close(self) -> None:
        """Close the underlying client."""
        self.client.close()

    def __enter__(self) -> FlyIOManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FlyIOManager(base_url={self.client.base_url!r})"
