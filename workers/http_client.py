"""A small client for the scaler's HTTP enqueue API (``POST /v1/queues/{queue}/messages``).

For producers that cannot reach Redis or do not run dramatiq. Every call carries a
``message_id`` (generated when not given), so a retry after a timeout or a 503 can never enqueue
the same message twice: the server answers a repeated id with the existing message.

    client = EnqueueClient("https://scaler.internal:9090", token=os.environ["SCALER_TOKEN"])
    sent = client.enqueue("thumbs", "resize", args=[42], machine={"size": "performance-2x"})
    client.state(sent["message_id"])["state"]   # queued | claimed | running | done | ...
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

__all__ = ["EnqueueClient", "EnqueueError"]

_RETRY_STATUSES = frozenset({502, 503, 504})


class EnqueueError(Exception):
    """The API refused a request. ``status`` is the HTTP status; ``body`` the JSON error
    (``errors`` lists each invalid field with a fix on a 422)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        text = f"HTTP {status}: {body.get('message', body)}"
        fields = self.fields
        if fields:
            text += "".join(f"\n  - {name}: {problem}" for name, problem in fields.items())
        super().__init__(text)

    @property
    def fields(self) -> dict[str, str]:
        """Each invalid field (a 422) -> what is wrong and the fix; empty for other refusals."""
        out: dict[str, str] = {}
        for e in self.body.get("errors") or ():
            if isinstance(e, dict) and e.get("field"):
                fix = f" ({e['fix']})" if e.get("fix") else ""
                out[str(e["field"])] = f"{e.get('message', 'invalid')}{fix}"
        return out


class EnqueueClient:
    """Synchronous client; ``token`` is sent as ``Authorization: Bearer`` and never shown."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._retries = retries
        self._backoff = backoff_s
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {token}"},
        )

    def __repr__(self) -> str:
        return f"EnqueueClient({str(self._http.base_url)!r})"

    def __enter__(self) -> EnqueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def enqueue(
        self,
        queue: str,
        actor: str,
        *,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay_ms: int | None = None,
        machine: dict[str, Any] | None = None,
        max_retries: int | None = None,
        time_limit_ms: int | None = None,
        message_id: str | None = None,
    ) -> dict[str, Any]:
        """Enqueue ``actor(*args, **kwargs)`` on ``queue``; return ``{"message_id", "queue",
        "state", ...}``. Retries transport errors and 502/503/504 with the same message_id, backing
        off exponentially from ``backoff_s``; other refusals raise :class:`EnqueueError`."""
        options = {
            k: v for k, v in {"delay_ms": delay_ms, "machine": machine,
                              "max_retries": max_retries, "time_limit_ms": time_limit_ms}.items()
            if v is not None
        }
        body = {"actor": actor, "args": list(args), "kwargs": kwargs or {}, "options": options,
                "message_id": message_id or str(uuid.uuid4())}
        return self._send("POST", f"/v1/queues/{queue}/messages", body)

    def state(self, message_id: str) -> dict[str, Any]:
        """Where the message is now (see the API's ``MessageState``)."""
        return self._send("GET", f"/v1/messages/{message_id}", None)

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            if attempt:
                time.sleep(min(self._backoff * 2 ** (attempt - 1), 5.0))
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError:
                if last:
                    raise
                continue
            if response.status_code in _RETRY_STATUSES and not last:
                continue
            try:
                data = response.json()
            except ValueError:
                data = {"message": response.text[:200]}
            if response.is_success:
                result: dict[str, Any] = data
                return result
            raise EnqueueError(response.status_code, data if isinstance(data, dict) else {})
        raise AssertionError("unreachable")  # pragma: no cover
