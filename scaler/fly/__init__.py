"""The Fly Machines API: typed clients, wire models, errors, sizing, rate limits.

- :class:`AsyncFlyClient` / :class:`FlyClient` (``scaler.fly.client``): every operation, with the
  rate governor, bounded retries and safe create resolution.
- ``scaler.fly.models``: pydantic wire models per the official spec (unknown fields kept).
- ``scaler.fly.errors``: the documented error hierarchy (:class:`FlyError` and below).
- ``scaler.fly.sizing``: presets and :func:`guest_for` / :func:`validate_guest`.
- ``scaler.fly.manager``: the quick-start conveniences, the synchronous :class:`FlyIOManager`
  and the flat :class:`MachineConfig` builder (the wire model of a machine's ``config`` is
  :class:`FlyMachineConfig`).
"""

from scaler.fly.client import AsyncFlyClient, ClientOptions, FlyClient
from scaler.fly.errors import (
    AmbiguousCreate,
    BadRequest,
    Conflict,
    FlyAPIError,
    FlyError,
    FlyTransportError,
    Forbidden,
    InsufficientCapacity,
    MachineLimit,
    NameTaken,
    NotFound,
    PreconditionFailed,
    RateLimited,
    RequestTimeout,
    ServerError,
    Unauthorized,
    Unprocessable,
)
from scaler.fly.manager import FlyIOManager, MachineConfig
from scaler.fly.models import (
    App,
    CreateMachineRequest,
    FlyMachineConfig,
    Guest,
    Lease,
    Machine,
    MachineEvent,
    Region,
    StartResponse,
    UpdateMachineRequest,
    Volume,
    VolumeSnapshot,
    WaitResponse,
)
from scaler.fly.retry import RetryPolicy, Safety
from scaler.fly.sizing import SizingError, guest_for, validate_guest

__all__ = [
    "AmbiguousCreate",
    "App",
    "AsyncFlyClient",
    "BadRequest",
    "ClientOptions",
    "Conflict",
    "CreateMachineRequest",
    "FlyAPIError",
    "FlyClient",
    "FlyError",
    "FlyIOManager",
    "FlyMachineConfig",
    "FlyTransportError",
    "Forbidden",
    "Guest",
    "InsufficientCapacity",
    "Lease",
    "Machine",
    "MachineConfig",
    "MachineEvent",
    "MachineLimit",
    "NameTaken",
    "NotFound",
    "PreconditionFailed",
    "RateLimited",
    "Region",
    "RequestTimeout",
    "RetryPolicy",
    "Safety",
    "ServerError",
    "SizingError",
    "StartResponse",
    "Unauthorized",
    "Unprocessable",
    "UpdateMachineRequest",
    "Volume",
    "VolumeSnapshot",
    "WaitResponse",
    "guest_for",
    "validate_guest",
]
