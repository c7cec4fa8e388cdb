"""What apps import to enqueue work for fly-scaler: the enqueue middleware, per-job machine options
and a broker configured the way the scaler's machines configure theirs.

The implementation lives in :mod:`scaler.jobs.enqueue` (the scaler and the app toolkit share it;
the scaler never imports ``workers``). Importing this module loads dramatiq and the scaler's light
job contract only: never httpx or the Fly client.
"""

from __future__ import annotations

from scaler.jobs.enqueue import (
    MACHINE_OPTION_KEYS,
    ActorMachineError,
    MachineOptionsError,
    ScalerMiddleware,
    redis_broker_from_env,
    send_with_machine,
    validate_machine_options,
)

__all__ = [
    "MACHINE_OPTION_KEYS",
    "ActorMachineError",
    "MachineOptionsError",
    "ScalerMiddleware",
    "redis_broker_from_env",
    "send_with_machine",
    "validate_machine_options",
]
