"""What a request handler gets: the parsed request and the server's parts."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scaler.local import ids
from scaler.local.clock import wall
from scaler.local.config import LocalAPIConfig
from scaler.local.errors import APIError, bad_request
from scaler.local.faults import RequestFault
from scaler.local.lifecycle import Engine
from scaler.local.model import MachineRecord
from scaler.local.store import Store
from scaler.local.validation import check_body

__all__ = ["NONCE_HEADER", "Context", "DropConnection", "Handler", "json_response"]

NONCE_HEADER = "fly-machine-lease-nonce"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_response(body: Any, status: int = 200) -> Response:
    """A compact JSON response."""
    return Response(_dumps(body), status_code=status, media_type="application/json")


class DropConnection(Exception):
    """Close the client's connection without answering (an ambiguous create)."""


@dataclass(slots=True)
class Context:
    """One request, resolved: path params, the owner (token identity) and the fault drawn."""

    request: Request
    operation: str
    params: dict[str, str]
    owner: str
    fault: RequestFault
    config: LocalAPIConfig
    store: Store
    engine: Engine

    @property
    def query(self) -> Any:
        """The query parameters (a multi-dict)."""
        return self.request.query_params

    async def body(self, schema: str | None = None, *, optional: bool = False) -> dict[str, Any]:
        """The JSON object body, checked against the spec's ``schema`` when given."""
        raw = await self.request.body()
        if not raw.strip():
            if optional:
                return {}
            raise bad_request("request body: required; send a JSON object")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise bad_request(f"request body: invalid JSON ({exc.msg})") from None
        except UnicodeDecodeError:
            raise bad_request("request body: not UTF-8") from None
        if not isinstance(body, dict):
            raise bad_request(f"request body: expected a JSON object, got {type(body).__name__}")
        if schema is not None:
            check_body(body, schema)
        return body

    def machine(self) -> MachineRecord:
        """The machine named by the path (404 otherwise)."""
        return self.store.machine(self.params["app_name"], self.params["machine_id"])

    def require_nonce(self, machine: MachineRecord) -> None:
        """409 when the machine is leased and the request does not carry that lease's nonce."""
        lease = machine.live_lease(wall())
        if lease is None:
            return
        if self.request.headers.get(NONCE_HEADER, "") != lease.nonce:
            raise APIError(
                409,
                f"machine ID {machine.id} lease currently held by {lease.owner}, expires at "
                f"{ids.rfc3339(lease.expires_at)}; "
                f"send its nonce in the {NONCE_HEADER} header",
            )


Handler = Callable[[Context], Awaitable[Response]]
