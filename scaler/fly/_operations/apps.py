"""Operations on apps."""

from __future__ import annotations

from scaler.fly._operations.call import Call, _model, _nothing, _q, _seg
from scaler.fly.models import (
    App,
    CreateAppRequest,
    CreateAppResponse,
    ListAppsResponse,
)
from scaler.fly.retry import Safety

__all__ = [
    "create_app",
    "delete_app",
    "get_app",
    "list_apps",
]


def list_apps(org_slug: str = "personal", *, app_role: str | None = None) -> Call[list[App]]:
    """List the apps of an organization (``personal`` is your own)."""
    return Call(
        "GET", "/v1/apps", lambda b: ListAppsResponse.model_validate(b or {}).apps,
        Safety.IDEMPOTENT, params=_q(org_slug=org_slug, app_role=app_role),
    )


def create_app(
    name: str,
    org_slug: str = "personal",
    *,
    network: str | None = None,
    enable_subdomains: bool | None = None,
) -> Call[CreateAppResponse]:
    """Create an app (names are global across Fly: 422 :class:`NameTaken` if used)."""
    body = CreateAppRequest(
        name=name, org_slug=org_slug, network=network, enable_subdomains=enable_subdomains
    )
    return Call("POST", "/v1/apps", _model(CreateAppResponse), Safety.UNSAFE, body=body.to_wire())


def get_app(app_name: str) -> Call[App]:
    """One app."""
    return Call("GET", f"/v1/apps/{_seg(app_name, 'app_name')}", _model(App), Safety.IDEMPOTENT)


def delete_app(app_name: str, *, force: bool = False) -> Call[None]:
    """Delete an app; ``force`` stops its machines first (Fly: 100 deletions per minute)."""
    return Call(
        "DELETE", f"/v1/apps/{_seg(app_name, 'app_name')}", _nothing, Safety.IDEMPOTENT,
        params=_q(force=True if force else None),
    )
