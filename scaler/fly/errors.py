"""Every error the Fly client raises, in one hierarchy.

::

    FlyError                         base of everything below
    ├── FlyAPIError                  Fly answered with an error status
    │   ├── BadRequest               400 (bad parameters or JSON; ``volume not found``)
    │   ├── Unauthorized             401 (missing or invalid token)
    │   ├── Forbidden                403 (token lacks the scope)
    │   ├── NotFound                 404 (app, machine, volume, lease or metadata key)
    │   ├── RequestTimeout           408 (wait: not there yet; other calls: outcome unknown)
    │   ├── Conflict                 409 (lease held, nonce missing, ``current_version`` mismatch)
    │   ├── PreconditionFailed       412 (volume in use, not startable, metadata version)
    │   ├── Unprocessable            422
    │   │   ├── NameTaken            ``status: "name_taken"`` (app names are global)
    │   │   └── MachineLimit         the org's machine limit was reached
    │   ├── RateLimited              429 (``retry_after`` seconds from ``Retry-After``, or None)
    │   ├── ServerError              5xx
    │   └── InsufficientCapacity     ``status`` ``insufficient_capacity`` or
    │                                ``volume_placement_capacity``, whatever the HTTP status
    ├── FlyTransportError            no HTTP answer (connect error, timeout, dropped connection);
    │                                ``sent`` tells whether the request may have reached Fly
    └── AmbiguousCreate              a create's outcome is unknown and could not be resolved

Each :class:`FlyAPIError` carries ``status_code``, Fly's ``error`` text (``message`` as a fallback,
as lease endpoints use it), Fly's ``status`` string as ``fly_status``, the ``fly-request-id`` header
as ``request_id`` and the operation as ``action`` (the spec's operationId, e.g.
``Machines_create``). No error ever contains the API token: messages are built from Fly's answer
and the operation only, never from request headers.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "AmbiguousCreate",
    "BadRequest",
    "Conflict",
    "FlyAPIError",
    "FlyError",
    "FlyTransportError",
    "Forbidden",
    "InsufficientCapacity",
    "MachineLimit",
    "NameTaken",
    "NotFound",
    "PreconditionFailed",
    "RateLimited",
    "RequestTimeout",
    "ServerError",
    "Unauthorized",
    "Unprocessable",
    "api_error",
    "listing_problem",
]


class FlyError(Exception):
    """Base of every error raised by ``scaler.fly``."""


class FlyAPIError(FlyError):
    """Fly answered with an error status (see the module docstring for the subclasses)."""

    def __init__(
        self,
        status_code: int,
        error: str | None = None,
        *,
        fly_status: str | None = None,
        request_id: str | None = None,
        action: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error = error
        self.fly_status = fly_status
        self.request_id = request_id
        self.action = action
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"{self.action or 'Fly API'}: HTTP {self.status_code}"]
        if self.fly_status:
            parts.append(f"[{self.fly_status}]")
        if self.error:
            parts.append(self.error)
        if self.request_id:
            parts.append(f"(fly-request-id {self.request_id})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, error={self.error!r}, "
            f"fly_status={self.fly_status!r}, request_id={self.request_id!r}, "
            f"action={self.action!r})"
        )


class BadRequest(FlyAPIError):
    """400: Fly rejected the parameters or body."""


class Unauthorized(FlyAPIError):
    """401: the token is missing or invalid."""


class Forbidden(FlyAPIError):
    """403: the token may not do this."""


class NotFound(FlyAPIError):
    """404: the app, machine, volume, lease or metadata key does not exist (yet: Fly is
    eventually consistent right after a create)."""


class RequestTimeout(FlyAPIError):
    """408: for ``wait``, the state was not reached in time; elsewhere the outcome is unknown."""


class Conflict(FlyAPIError):
    """409: a lease is held / the nonce is missing, or ``current_version`` does not match."""


class PreconditionFailed(FlyAPIError):
    """412: the volume is in use, the machine cannot start from its state, or a version guard
    (metadata ``machine_version``) does not match."""


class Unprocessable(FlyAPIError):
    """422: the request is understood but refused."""


class NameTaken(Unprocessable):
    """422 ``name_taken``: app names are global across Fly."""


class MachineLimit(Unprocessable):
    """422: the organization may not have more machines (e.g. no payment method)."""


class RateLimited(FlyAPIError):
    """429. ``retry_after`` is the server's ``Retry-After`` in seconds, or None (Fly does not
    document sending it)."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)


class ServerError(FlyAPIError):
    """5xx: a platform error; safe-to-repeat calls are retried."""


class InsufficientCapacity(FlyAPIError):
    """No room for the machine or volume in the region (``insufficient_capacity`` or
    ``volume_placement_capacity``). Try another region or later."""


class FlyTransportError(FlyError):
    """No HTTP answer. ``sent`` is False only when the request surely never reached Fly (the
    connection could not be made); True means it may have been processed."""

    def __init__(self, message: str, *, sent: bool, action: str | None = None) -> None:
        self.sent = sent
        self.action = action
        super().__init__(f"{action or 'Fly API'}: {message}")


class AmbiguousCreate(FlyError):
    """A create may or may not have happened, and looking it up could not tell: the machine had
    no name or metadata to find it by, or the lookup failed. Check before creating again."""

    def __init__(self, message: str, *, action: str = "Machines_create") -> None:
        self.action = action
        super().__init__(f"{action}: {message}")


_BY_STATUS: dict[int, type[FlyAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    412: PreconditionFailed,
    422: Unprocessable,
    429: RateLimited,
}
_CAPACITY = {"insufficient_capacity", "volume_placement_capacity"}
_MACHINE_LIMIT = re.compile(r"machine limit|more than \d+ machines?|add a payment method", re.I)


def api_error(
    status_code: int,
    body: Any,
    *,
    request_id: str | None = None,
    action: str | None = None,
    retry_after: float | None = None,
) -> FlyAPIError:
    """The right :class:`FlyAPIError` subclass for an error answer (``body`` is parsed JSON, text,
    or None). Reads ``error``, falling back to ``message``, and ``status``."""
    error: str | None = None
    fly_status: str | None = None
    if isinstance(body, dict):
        raw = body.get("error") or body.get("message")
        error = str(raw) if raw else None
        status = body.get("status")
        fly_status = str(status) if status else None
    elif isinstance(body, str) and body.strip():
        error = body.strip()[:500]
    kwargs: dict[str, Any] = {"fly_status": fly_status, "request_id": request_id, "action": action}
    if fly_status in _CAPACITY:
        return InsufficientCapacity(status_code, error, **kwargs)
    if status_code == 422 and fly_status == "name_taken":
        return NameTaken(status_code, error, **kwargs)
    if status_code == 422 and error and _MACHINE_LIMIT.search(error):
        return MachineLimit(status_code, error, **kwargs)
    if status_code == 429:
        return RateLimited(status_code, error, retry_after=retry_after, **kwargs)
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else FlyAPIError
    return cls(status_code, error, **kwargs)


def listing_problem(app: str, exc: BaseException) -> str:
    """Why an app's machines cannot be listed, said for an operator: the cause, then the fix."""
    if isinstance(exc, Unauthorized):
        return (f"the Fly token was refused (HTTP 401) listing app {app!r}: check FLY_API_TOKEN "
                f"or fly.token_file (e.g. `fly tokens create deploy -a {app}`)")
    if isinstance(exc, Forbidden):
        return (f"the Fly token may not read app {app!r} (HTTP 403): use a token of its "
                f"organization or a deploy token of the app (`fly tokens create deploy -a {app}`)")
    if isinstance(exc, NotFound):
        return (f"app {app!r} does not exist (HTTP 404): create it (`fly apps create {app}`, or "
                "`scaler init --create-apps` on a local API) or fix the pool's app")
    if isinstance(exc, FlyTransportError):
        return f"the Machines API cannot be reached listing app {app!r}: {exc}"
    return f"listing app {app!r} failed: {exc}"
