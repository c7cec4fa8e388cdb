"""The bodies the HTTP port answers with (besides a message's state, in :mod:`scaler.http.enqueue`),
described once as pydantic models: they produce the answers and are the OpenAPI document's schemas.
:class:`Problem` is an error answer raised while a request is handled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import JSONResponse

__all__ = ["Error", "FieldError", "InvalidRequest", "Problem", "ResponseBody", "Status", "answer"]


def _unset_is_left_out(schema: dict[str, Any]) -> None:
    # An answer leaves an unset optional field out (it never sends null), so the document must
    # not claim a null default.
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class ResponseBody(BaseModel):
    """Base of every answer's body: field docstrings are the document's descriptions, and an
    optional field typed ``X | SkipJsonSchema[None]`` is left out when unset."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, json_schema_extra=_unset_is_left_out
    )


class Status(ResponseBody):
    """A probe's answer."""

    status: str
    """``ok`` (``/healthz``); ``ready`` or ``not ready`` (``/readyz``)."""
    reason: str | SkipJsonSchema[None] = None
    """Why it is (not) ready (``/readyz``)."""


class FieldError(ResponseBody):
    """One problem in a request."""

    field: str
    """Where: a dotted path such as ``options.delay_ms``, or ``(body)`` for the whole body."""
    message: str
    """What is wrong, with the value given."""
    fix: str
    """What to send instead."""


class Error(ResponseBody):
    """An error answer."""

    error: str
    """A stable code: ``unauthorized``, ``forbidden``, ``unknown_queue``, ``conflict``, ..."""
    message: str
    """What went wrong and what to do, in a sentence."""


class InvalidRequest(Error):
    """A 422: every problem found in the request, each with its fix."""

    errors: list[FieldError]
    """One entry per problem."""


def answer(body: BaseModel, status_code: int = 200,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """``body`` as JSON, unset optional fields left out."""
    return JSONResponse(body.model_dump(mode="json", exclude_none=True),
                        status_code=status_code, headers=headers)


class Problem(Exception):
    """An error answer (:class:`Error`, or :class:`InvalidRequest` when ``errors`` are given)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors, self.headers = errors, headers

    def response(self) -> JSONResponse:
        """The answer."""
        body = (Error(error=self.code, message=self.message) if self.errors is None else
                InvalidRequest(error=self.code, message=self.message, errors=list(self.errors)))
        return answer(body, self.status, self.headers)
