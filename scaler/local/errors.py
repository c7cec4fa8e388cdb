"""The errors the local Machines API answers with, in Fly's envelopes."""

from __future__ import annotations

from typing import Any

__all__ = ["APIError", "LeaseError"]


class APIError(Exception):
    """An error answer: ``{"error": message, "status": fly_status}`` with an HTTP status."""

    def __init__(self, http_status: int, message: str, fly_status: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.fly_status = fly_status

    def body(self) -> dict[str, Any]:
        """The JSON body (Fly's ``ErrorResponse``)."""
        out: dict[str, Any] = {"error": self.message}
        if self.fly_status:
            out["status"] = self.fly_status
        return out


class LeaseError(APIError):
    """An error on a lease endpoint, which Fly answers in the lease envelope instead."""

    def body(self) -> dict[str, Any]:
        return {"status": "error", "message": self.message, "error": self.message}


def not_found_app() -> APIError:
    """404 for an unknown app (flyctl matches this text)."""
    return APIError(404, "Could not find App")


def not_found_machine() -> APIError:
    """404 for an unknown machine."""
    return APIError(404, "machine not found")


def bad_request(message: str) -> APIError:
    """400 with a message that names the field."""
    return APIError(400, message)
