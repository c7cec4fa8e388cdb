"""What a valid config may still lack to do its job: a Fly token (an error for ``scaler run`` and
``scaler check-config``), and settings that are valid but do nothing (warnings, printed by
``check-config`` and logged once by ``run``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaler.config.schema import Settings

__all__ = ["NO_TOKEN", "missing_token", "warnings"]

NO_TOKEN = (
    "fly.token: no Fly API token; set env FLY_API_TOKEN (e.g. from `fly tokens create deploy`) "
    'or fly.token_file = "/path/to/token"'
)


def missing_token(settings: Settings) -> str | None:
    """:data:`NO_TOKEN` when no Fly token was found, else None."""
    return NO_TOKEN if settings.fly.token is None else None


def warnings(settings: Settings) -> list[str]:
    """Valid settings that make the scaler do nothing, one line each naming the key."""
    out: list[str] = []
    if not settings.pools:
        out.append("pools: no pool is configured, so nothing is watched or launched; add a "
                   "[[pools]] table (README, 'Configuration reference')")
    if settings.scaler.max_machines == 0:
        out.append("scaler.max_machines: 0 means no machine is ever launched; raise it")
    for i, p in enumerate(settings.pools):
        if p.max_machines == 0:
            out.append(f"pools[{i}].max_machines: 0 means pool {p.name!r} never launches a "
                       "machine; raise it or remove the pool")
    return out
