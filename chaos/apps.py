"""Creating several apps on the local API, whose own rate limit (Fly's: 1 app creation per second,
bursts of 3) a scenario with many apps runs into before the scaler even starts."""

from __future__ import annotations

from chaos.localapi import LocalAPI
from chaos.measure import wait_for

__all__ = ["new_apps"]


def new_apps(api: LocalAPI, n: int, timeout: float = 30.0) -> list[str]:
    """``n`` fresh apps, waiting out 429s. The 429s it met are the scenario's set-up, not the
    scaler's: compare :meth:`LocalAPI.rate_limited` after this call."""
    made: list[str] = []

    def attempt() -> bool:
        while len(made) < n:
            try:
                made.append(api.create_app())
            except AssertionError:  # 429: app creation is limited like every call
                return False
        return True

    if not wait_for(attempt, timeout, interval=0.3):
        raise RuntimeError(f"could not create {n} apps on the local API within {timeout:g} s")
    return made
