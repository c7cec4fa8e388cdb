"""``workflow_job`` deliveries: headers and raw body into a typed :class:`WorkflowJobEvent`.

A delivery is read in this order, so nothing unverified is parsed: the body's size against
:data:`MAX_BODY_BYTES`, the signature (:mod:`scaler.github.signature`), then the JSON
(:func:`read_delivery`). :func:`parse_delivery` is the last step alone.

``ping`` (sent when a webhook is created), every other event and every ``workflow_job`` action
other than ``queued``, ``waiting``, ``in_progress`` and ``completed`` are recognised and answered
with :class:`Ignored` (a reason fit for a metric label), not an error: GitHub keeps sending what a
webhook subscribes to, and adds actions over time. A malformed body raises
:class:`MalformedDelivery` naming the field (``workflow_job.labels``), never echoing the body.

The payload fields read are those of GitHub's documented examples; everything else is ignored.
Runner fields are null until a runner is assigned (and, for GitHub-hosted jobs, filled even on
``queued``); a ``queued`` action may carry ``workflow_job.status: "waiting"`` (a deployment
waiting for approval); ``installation`` and ``organization`` may each be absent; job and run ids
exceed 2^32.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError

from scaler.github.signature import SIGNATURE_HEADER, verify
from scaler.secret import Secret

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "MAX_BODY_BYTES",
    "BodyTooLarge",
    "Delivery",
    "IgnoreReason",
    "Ignored",
    "JobAction",
    "MalformedDelivery",
    "WorkflowJobEvent",
    "parse_delivery",
    "read_delivery",
]

EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"

MAX_BODY_BYTES = 1 << 20
"""1 MiB. GitHub caps any delivery at 25 MB, but a ``workflow_job`` body is a job, its steps and
its repository: the documented examples are 8 to 14 KB, so 1 MiB leaves room for a job with
hundreds of steps while bounding what an unauthenticated sender can make us buffer and hash."""

# GitHub's delivery ids are GUIDs; anything else is refused before it becomes a Redis key.
_DELIVERY_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


class JobAction(enum.StrEnum):
    """The ``workflow_job`` actions this package acts on."""

    QUEUED = "queued"
    WAITING = "waiting"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


IgnoreReason = Literal["ping", "other_event", "other_action"]


class MalformedDelivery(ValueError):
    """The delivery cannot be read; ``field`` names what is wrong (a header or a body path)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class BodyTooLarge(MalformedDelivery):
    """The body is over :data:`MAX_BODY_BYTES` (answer 413)."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A delivery recognised and deliberately not acted on."""

    delivery_id: str
    event: str
    action: str | None
    reason: IgnoreReason


@dataclass(frozen=True, slots=True)
class WorkflowJobEvent:
    """One ``workflow_job`` delivery, reduced to what routing and runners need.

    ``owner`` is the repository owner's login (an organization or a user); ``organization`` the
    delivery's organization login when it names one, else the owner when the owner is an
    organization, else ``None`` (a user's repository). ``runner_*`` are ``None`` until assigned.
    """

    delivery_id: str
    action: JobAction
    job_id: int
    run_id: int
    run_attempt: int
    job_name: str
    workflow_name: str | None
    status: str
    conclusion: str | None
    labels: tuple[str, ...]
    repository: str
    owner: str
    organization: str | None
    fork: bool
    private: bool
    installation_id: int | None
    runner_id: int | None
    runner_name: str | None
    runner_group_id: int | None
    created_at: datetime | None


Delivery = WorkflowJobEvent | Ignored


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Account(_Wire):
    login: StrictStr
    type: StrictStr | None = None


class _Repository(_Wire):
    full_name: StrictStr
    owner: _Account
    fork: StrictBool
    private: StrictBool = False


class _Job(_Wire):
    id: StrictInt
    run_id: StrictInt
    run_attempt: StrictInt = 1
    name: StrictStr
    workflow_name: StrictStr | None = None
    status: StrictStr
    conclusion: StrictStr | None = None
    labels: list[StrictStr]
    runner_id: StrictInt | None = None
    runner_name: StrictStr | None = None
    runner_group_id: StrictInt | None = None
    created_at: datetime | None = None


class _Installation(_Wire):
    id: StrictInt


class _Payload(_Wire):
    action: StrictStr
    workflow_job: _Job
    repository: _Repository
    organization: _Account | None = None
    installation: _Installation | None = None


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _required(headers: dict[str, str], name: str) -> str:
    value = headers.get(name.lower(), "").strip()
    if not value:
        raise MalformedDelivery(name, "missing: is this a GitHub webhook delivery?")
    return value


def _delivery_id(headers: dict[str, str]) -> str:
    value = _required(headers, DELIVERY_HEADER)
    if not _DELIVERY_ID.fullmatch(value):
        raise MalformedDelivery(DELIVERY_HEADER, "must be a GUID (letters, digits and dashes)")
    return value


def _check_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge("body", f"{len(body)} bytes is over the limit of {MAX_BODY_BYTES}")


def _field_error(exc: ValidationError) -> MalformedDelivery:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return MalformedDelivery(field, first["msg"].lower())


def parse_delivery(headers: Mapping[str, str], body: bytes) -> Delivery:
    """Read a delivery whose signature was already checked (see :func:`read_delivery`)."""
    lowered = _headers(headers)
    event = _required(lowered, EVENT_HEADER)
    delivery_id = _delivery_id(lowered)
    _check_size(body)
    if event == "ping":
        return Ignored(delivery_id, event, None, "ping")
    if event != "workflow_job":
        return Ignored(delivery_id, event, None, "other_event")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedDelivery("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedDelivery("body", "must be a JSON object")
    action = data.get("action")
    if not isinstance(action, str):
        raise MalformedDelivery("action", "missing or not a string")
    if action not in JobAction.__members__.values():
        return Ignored(delivery_id, event, action, "other_action")
    try:
        payload = _Payload.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc) from None
    return _event(delivery_id, payload)


def _event(delivery_id: str, payload: _Payload) -> WorkflowJobEvent:
    job, repo = payload.workflow_job, payload.repository
    if payload.organization is not None:
        organization: str | None = payload.organization.login
    elif repo.owner.type == "Organization":
        organization = repo.owner.login
    else:
        organization = None
    return WorkflowJobEvent(
        delivery_id=delivery_id,
        action=JobAction(payload.action),
        job_id=job.id,
        run_id=job.run_id,
        run_attempt=job.run_attempt,
        job_name=job.name,
        workflow_name=job.workflow_name,
        status=job.status,
        conclusion=job.conclusion,
        labels=tuple(job.labels),
        repository=repo.full_name,
        owner=repo.owner.login,
        organization=organization,
        fork=repo.fork,
        private=repo.private,
        installation_id=payload.installation.id if payload.installation else None,
        runner_id=job.runner_id,
        runner_name=job.runner_name,
        runner_group_id=job.runner_group_id,
        created_at=job.created_at,
    )


def read_delivery(secret: Secret, headers: Mapping[str, str], body: bytes) -> Delivery:
    """Size, signature, then JSON: the whole check of a webhook request.

    Raises :class:`BodyTooLarge` (413), :class:`~scaler.github.signature.SignatureError` (401) or
    :class:`MalformedDelivery` (400).
    """
    _check_size(body)
    verify(secret, body, _headers(headers).get(SIGNATURE_HEADER.lower()))
    return parse_delivery(headers, body)
