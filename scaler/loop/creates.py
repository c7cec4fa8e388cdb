"""One create call and what it came to: the timeout and retry policy of the scaler's creates,
and the outcome (:class:`Created`) the act step counts and records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import structlog

from scaler.config import PoolSpec
from scaler.fly.errors import (
    BadRequest,
    FlyError,
    InsufficientCapacity,
    MachineLimit,
    RateLimited,
    Unprocessable,
)
from scaler.fly.models import CreateMachineRequest, Machine
from scaler.fly.retry import RetryPolicy

__all__ = ["CREATE_RETRY", "CREATE_TIMEOUT_S", "Created", "send_create"]

log = structlog.get_logger(__name__)

CREATE_TIMEOUT_S = 25.0
"""How long this process lets one create run, retries included, before abandoning it: well
inside ``scaler.loop.act.CREATE_WINDOW_S``, so the create has surely stopped before anyone may
relaunch."""
CREATE_RETRY = RetryPolicy(max_attempts=2, max_elapsed=15.0)
"""Creates are tried twice in the client (after a lookup when the outcome was unknown); beyond
that the planner's backoff takes over, so a pool whose creates keep failing spends few of the
app's create tokens and the other pools keep theirs."""


class Created(NamedTuple):
    """How one create went: a ``launches_total`` result label, and the machine id when a machine
    is known to exist."""

    result: str
    machine_id: str | None = None
    error: str = ""


async def send_create(
    send: Callable[[], Awaitable[Machine]], pool: PoolSpec, request: CreateMachineRequest,
    app: str | None = None,
) -> Created:
    """Run one create call (``send``) and say what it came to. Gives up (``"abandoned"``: the
    outcome is unknown) after ``CREATE_TIMEOUT_S``."""
    try:
        machine = await asyncio.wait_for(send(), timeout=CREATE_TIMEOUT_S)
    except TimeoutError:
        log.warning("create abandoned: no answer in time", pool=pool.name, name=request.name,
                    seconds=CREATE_TIMEOUT_S)
        return Created("abandoned", error="no answer in time")
    except RateLimited as exc:
        return Created("rate_limited", error=str(exc))
    except (InsufficientCapacity, MachineLimit) as exc:
        log.warning("no room for the machine", pool=pool.name, name=request.name,
                    error=str(exc))
        return Created("capacity", error=str(exc))
    except (BadRequest, Unprocessable) as exc:
        log.error("machine refused", pool=pool.name, name=request.name, error=str(exc))
        return Created("refused", error=str(exc))
    except FlyError as exc:
        log.warning("create failed", pool=pool.name, name=request.name, error=str(exc),
                    error_type=type(exc).__name__)
        return Created("failed", error=str(exc))
    log.info("machine created", pool=pool.name, app=app or pool.app, machine=machine.id,
             name=machine.name, region=machine.region)
    return Created("created", machine.id)
