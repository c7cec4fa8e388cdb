"""The enqueue API: ``POST /v1/queues/{queue}/messages`` and ``GET /v1/messages/{message_id}``.

The request (:class:`EnqueueRequest`, :class:`EnqueueOptions`) and the answer
(:class:`MessageState`) are described once, as pydantic models: they validate the request, produce
the answer, and are the schemas of the OpenAPI document (:mod:`scaler.http.openapi`). Per-job
machine options are checked by :func:`scaler.jobs.enqueue.validate_machine_options`, the check
dramatiq producers get. A value given as ``null`` counts as left out.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from scaler.fly.sizing import PRESETS
from scaler.http.auth import BearerAuth
from scaler.http.responses import FieldError, Problem, ResponseBody, answer
from scaler.http.validation import parse, read_json, refusal
from scaler.jobs.enqueue import MACHINE_OPTION_KEYS, validate_machine_options
from scaler.jobs.messages import STATES, MessageStore, build_message
from scaler.telemetry.metrics import Metrics

__all__ = ["MAX_DELAY_MS", "EnqueueApi", "EnqueueOptions", "EnqueueRequest", "MessageState",
           "QueueInfo"]

log = structlog.get_logger(__name__)

MAX_DELAY_MS = 7 * 24 * 3600 * 1000  # dramatiq refuses longer delays
MAX_INT = 2**31 - 1


@dataclass(frozen=True)
class QueueInfo:
    """A queue that accepts HTTP messages, and the actor names allowed on it."""

    actors: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actors", frozenset(self.actors))


def _whole(value: Any) -> Any:
    # 3.0 is an integer in JSON Schema, and some JSON encoders write whole numbers that way.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Field(...) before the validator, or pydantic writes the bounds as "ge"/"le" in the schema.
Delay = Annotated[int, Field(ge=0, le=MAX_DELAY_MS), BeforeValidator(_whole)]
Retries = Annotated[int, Field(ge=0, le=MAX_INT), BeforeValidator(_whole)]
Milliseconds = Annotated[int, Field(ge=1, le=MAX_INT), BeforeValidator(_whole)]


_MACHINE_EXAMPLES = [{"size": "performance-2x", "region": "ord"}, {"cpus": 2, "memory_mb": 1024}]


def _machine(value: Any) -> dict[str, Any]:
    try:
        return validate_machine_options(value, field="options.machine")
    except ValueError as exc:
        reason = str(exc)
        _, use, advice = reason.partition(": use ")
        fix = f"use {advice}" if use else "send options.machine like " + " or ".join(
            json.dumps(example) for example in _MACHINE_EXAMPLES)
        raise refusal(reason, fix, str(getattr(exc, "field", "options.machine"))) from None


def _machine_schema() -> dict[str, Any]:
    # The keys and sizes come from the validator and the size catalogue; the rules stay there.
    values: dict[str, dict[str, Any]] = {
        "size": {"enum": [*PRESETS, None]},
        "cpu_kind": {"enum": [*sorted({p.cpu_kind for p in PRESETS.values()}), None]},
        "cpus": {"type": ["integer", "null"]},
        "memory_mb": {"type": ["integer", "null"]},
        "region": {"type": ["string", "null"], "examples": ["ord"]},
    }
    return {
        "type": "object", "additionalProperties": False,
        "properties": {key: values.get(key, {}) for key in sorted(MACHINE_OPTION_KEYS)},
        "examples": _MACHINE_EXAMPLES,
    }


MachineOptions = Annotated[dict[str, Any], PlainValidator(_machine),
                           WithJsonSchema(_machine_schema())]


class _Request(BaseModel):
    # strict: "3" is not an integer and 1 is not a string, as the JSON Schema says
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              use_attribute_docstrings=True)


class EnqueueOptions(_Request):
    """How the message runs; each option may be left out (or sent as null)."""

    delay_ms: Delay | None = None
    """Run no sooner than this many milliseconds from now (at most 7 days)."""
    max_retries: Retries | None = None
    """Retries after a failure (default: the actor's)."""
    time_limit_ms: Milliseconds | None = None
    """How long one run may take, in milliseconds (default: the actor's)."""
    machine: MachineOptions | None = None
    """The machine to run on (per-job pools): a preset ``size``, or ``cpus``, ``memory_mb`` and
    ``cpu_kind``; and a ``region`` (three lowercase letters). Checked as for dramatiq producers."""

    def dramatiq_options(self) -> dict[str, Any]:
        """The dramatiq message options these set (the delay is not one)."""
        given = {"max_retries": self.max_retries, "time_limit": self.time_limit_ms,
                 "fly_machine": self.machine}
        return {key: value for key, value in given.items() if value is not None}


@dataclass(frozen=True)
class _Target:
    queue: str
    actors: frozenset[str]


class EnqueueRequest(_Request):
    """A dramatiq message to enqueue on the queue of the path."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"actor": "resize", "args": [42], "kwargs": {"width": 200}}]})

    actor: str
    """An actor allowed on the queue (the pool's ``http_actors``)."""
    args: list[Any] = Field(default_factory=list, examples=[[1, "a"]])
    """Positional arguments."""
    kwargs: dict[str, Any] = Field(default_factory=dict, examples=[{"width": 200}])
    """Keyword arguments."""
    options: EnqueueOptions = Field(default_factory=EnqueueOptions)
    message_id: uuid.UUID | None = Field(
        default=None, strict=False, examples=["0b5f1c2e-7a3d-4c1e-9f00-2d3c4b5a6e7f"])
    """Idempotency key: the same id again answers the existing message (200) instead of writing
    a duplicate. Send one whenever a retry must not enqueue twice."""

    @field_validator("actor")
    @classmethod
    def _allowed_on_the_queue(cls, actor: str, info: ValidationInfo) -> str:
        target = info.context
        if isinstance(target, _Target) and actor not in target.actors:
            raise refusal(f"actor {actor!r} is not allowed on queue {target.queue!r}",
                          f"use one of: {_listed(target.actors)}")
        return actor

    def digest(self, queue: str) -> str:
        """What makes two requests the same message, whatever their message_id."""
        canonical = json.dumps(
            {"queue": queue, "actor": self.actor, "args": self.args, "kwargs": self.kwargs,
             "options": self.options.dramatiq_options(), "delay_ms": self.options.delay_ms},
            sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _listed(actors: frozenset[str]) -> str:
    return ", ".join(sorted(actors)) or "(none configured)"


class MessageState(ResponseBody):
    """Where a message is now."""

    message_id: uuid.UUID
    """The message's id: the one sent, or the one made for it."""
    queue: str
    """The queue it was sent to."""
    state: str = Field(json_schema_extra={"enum": list(STATES)})
    """``queued`` (with ``eta_ms`` while delayed), ``claimed``, ``running``, ``done`` or
    ``dead_lettered``."""
    eta_ms: int | SkipJsonSchema[None] = None
    """Delayed until then (ms since the epoch)."""
    machine_name: str | SkipJsonSchema[None] = None
    """The machine claimed for it (per-job pools)."""
    machine_id: str | SkipJsonSchema[None] = None
    """The machine running it."""
    launch: int | SkipJsonSchema[None] = None
    """Which launch of the message this is (1 for the first)."""
    reason: str | SkipJsonSchema[None] = None
    """Why it was dead-lettered: the job's error, the runner's set-up failure (e.g. an actor its
    image does not declare), ``max_age`` (too old when claimed), or the scaler's reason."""


class EnqueueApi:
    """The handlers of the enqueue API (see the module docstring)."""

    def __init__(self, *, store: MessageStore, queues: Mapping[str, QueueInfo],
                 auth: BearerAuth, metrics: Metrics, max_body_bytes: int) -> None:
        self._store, self._queues, self._auth = store, queues, auth
        self._metrics, self._limit = metrics, max_body_bytes

    def _refuse(self, problem: Problem) -> Response:
        self._metrics.http_rejected.labels(str(problem.status)).inc()
        return problem.response()

    async def enqueue(self, request: Request) -> Response:
        """``POST /v1/queues/{queue}/messages``."""
        try:
            self._auth.check(request)
            queue = request.path_params["queue"]
            info = self._queues.get(queue)
            if info is None:
                raise Problem(404, "unknown_queue", f"queue {queue!r} does not accept HTTP "
                              "messages; use a queue from the scaler's configuration")
            body = parse(EnqueueRequest, await read_json(request, self._limit),
                         context=_Target(queue, info.actors),
                         fixes={"actor": f"set actor to one of: {_listed(info.actors)}"})
            return await self._write(queue, body)
        except Problem as problem:
            return self._refuse(problem)

    async def _write(self, queue: str, body: EnqueueRequest) -> Response:
        digest = body.digest(queue)
        message = build_message(
            queue=queue, actor=body.actor, args=body.args, kwargs=body.kwargs,
            options=body.options.dramatiq_options(),
            message_id=None if body.message_id is None else str(body.message_id),
            now_ms=int(time.time() * 1000), delay_ms=body.options.delay_ms)
        try:
            result = await self._store.enqueue(message, digest=digest)
            retried = not result.created and (result.queue, result.digest) == (queue, digest)
            state = await self._store.lookup(result.message_id) if retried else None
        except RedisError as exc:
            log.warning("http.enqueue_failed", queue=queue, error=type(exc).__name__)
            raise Problem(503, "unavailable", "Redis is unavailable; retry with the same "
                          "message_id", headers={"Retry-After": "1"}) from exc
        location = {"Location": f"/v1/messages/{result.message_id}"}
        if result.created:
            self._metrics.http_enqueued.labels(queue).inc()
            log.info("http.enqueued", queue=queue, actor=body.actor,
                     message_id=result.message_id)
            created = MessageState(message_id=uuid.UUID(result.message_id), queue=queue,
                                   state="queued", eta_ms=message.options.get("eta"))
            return answer(created, 202, location)
        if not retried:
            raise Problem(409, "conflict", f"message_id {result.message_id} was already used "
                          "for a different message; send a new message_id")
        existing = (MessageState.model_validate(state.to_json()) if state is not None else
                    MessageState(message_id=uuid.UUID(result.message_id), queue=queue,
                                 state="done"))
        return answer(existing, 200, location)

    async def message_state(self, request: Request) -> Response:
        """``GET /v1/messages/{message_id}``."""
        try:
            self._auth.check(request)
            raw = request.path_params["message_id"]
            try:
                message_id = str(uuid.UUID(raw))
            except ValueError:
                raise Problem(422, "invalid_request", "message_id must be a UUID", errors=[
                    FieldError(field="message_id", message=f"not a UUID: {raw[:64]!r}",
                               fix="use the message_id returned by the enqueue call")]) from None
            try:
                state = await self._store.lookup(message_id)
            except RedisError as exc:
                raise Problem(503, "unavailable", "Redis is unavailable; retry",
                              headers={"Retry-After": "1"}) from exc
        except Problem as problem:
            return self._refuse(problem) if problem.status in (401, 403) else problem.response()
        if state is None:
            return Problem(404, "unknown_message", f"no message {message_id} (unknown, or its "
                           "record expired)").response()
        return answer(MessageState.model_validate(state.to_json()))
