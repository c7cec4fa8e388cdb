"""workflow_job deliveries: GitHub's documented payloads read into events, everything else
recognised or refused with the field named, and the signature checked before any parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scaler.github.events import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    Ignored,
    JobAction,
    MalformedDelivery,
    WorkflowJobEvent,
    parse_delivery,
    read_delivery,
)
from scaler.github.signature import SignatureError, sign
from scaler.secret import Secret

DATA = Path(__file__).parent / "data/github"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
SECRET = Secret("webhook secret for the events tests")


def headers(event: str = "workflow_job", delivery: str = DELIVERY) -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}


def example(name: str) -> bytes:
    return (DATA / f"{name}.payload.json").read_bytes()


def event_of(body: bytes | dict[str, Any]) -> WorkflowJobEvent:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    parsed = parse_delivery(headers(), raw)
    assert isinstance(parsed, WorkflowJobEvent)
    return parsed


# name, action, status, job id, run id, labels, repository, owner, organization, installation,
# runner name, conclusion
EXAMPLES = [
    ("queued", "queued", "queued", 289782451, 2202229078, ("ubuntu-latest",),
     "Codertocat/Hello-World", "Octocoders", "Octocoders", 3456996, "GitHub Actions 5", None),
    ("queued.with-deployment", "queued", "waiting", 12877621891, 4747967848,
     ("self-hosted", "k8s"), "lineville/elastic-machines-testing", "lineville", None, 23154469,
     None, None),
    ("waiting", "waiting", "waiting", 12877621891, 4747967848, ("self-hosted", "k8s"),
     "lineville/elastic-machines-testing", "lineville", None, 23154469, None, None),
    ("in_progress", "in_progress", "in_progress", 289782451, 2202229078, ("ubuntu-latest",),
     "Codertocat/Hello-World", "Octocoders", "Octocoders", 1, "GitHub Actions 5", None),
    ("in_progress.with-queued-steps", "in_progress", "in_progress", 14541957942, 5373506832,
     ("ubuntu-latest",), "wolfy1339/github-events-schemas", "wolfy1339", None, 3456996,
     "GitHub Actions 6", None),
    ("completed.success.with-organization", "completed", "completed", 289782451, 2202229078,
     ("ubuntu-latest",), "Codertocat/Hello-World", "Octocoders", "Octocoders", None,
     "GitHub Actions 5", "success"),
    ("completed.failure.with-organization", "completed", "completed", 289782451, 2202229078,
     ("ubuntu-latest",), "Codertocat/Hello-World", "Octocoders", "Octocoders", None,
     "GitHub Actions 5", "failure"),
]


@pytest.mark.parametrize(("name", "action", "status", "job_id", "run_id", "labels", "repository",
                          "owner", "organization", "installation", "runner", "conclusion"),
                         EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_documented_payload_is_read(
    name: str, action: str, status: str, job_id: int, run_id: int, labels: tuple[str, ...],
    repository: str, owner: str, organization: str | None, installation: int | None,
    runner: str | None, conclusion: str | None,
) -> None:
    event = event_of(example(name))
    assert event.delivery_id == DELIVERY
    assert event.action is JobAction(action)
    assert (event.status, event.job_id, event.run_id) == (status, job_id, run_id)
    assert event.labels == labels
    assert (event.repository, event.owner, event.organization) == (repository, owner, organization)
    assert event.installation_id == installation
    assert event.fork is False
    assert (event.runner_name, event.conclusion) == (runner, conclusion)
    assert (event.runner_id is None) == (runner is None)


def test_organization_comes_from_the_payload_when_present() -> None:
    payload = json.loads(example("completed.success.with-organization"))
    payload["organization"]["login"] = "Octo-org"
    assert event_of(payload).organization == "Octo-org"
    del payload["organization"]
    assert event_of(payload).organization == "Octocoders"  # the owner is an Organization
    payload["repository"]["owner"]["type"] = "User"
    assert event_of(payload).organization is None


def test_a_fork_is_reported() -> None:
    payload = json.loads(example("waiting"))
    payload["repository"]["fork"] = True
    assert event_of(payload).fork is True


def test_ids_above_32_bits_stay_exact() -> None:
    event = event_of(example("in_progress.with-queued-steps"))
    assert event.job_id == 14541957942 > 2**32


def test_header_names_are_case_insensitive() -> None:
    lowered = {k.lower(): v for k, v in headers().items()}
    assert isinstance(parse_delivery(lowered, example("queued")), WorkflowJobEvent)


def test_ping_and_other_events_are_ignored_not_errors() -> None:
    ping = parse_delivery(headers("ping"), b'{"zen": "Keep it logically awesome.", "hook_id": 1}')
    assert ping == Ignored(DELIVERY, "ping", None, "ping")
    push = parse_delivery(headers("push"), b"{}")
    assert push == Ignored(DELIVERY, "push", None, "other_event")


def test_an_unknown_action_is_ignored() -> None:
    payload = json.loads(example("queued"))
    payload["action"] = "started"  # the action GitHub removed in 2022
    parsed = parse_delivery(headers(), json.dumps(payload).encode())
    assert parsed == Ignored(DELIVERY, "workflow_job", "started", "other_action")


def _broken(change: Any) -> bytes:
    payload = json.loads(example("queued"))
    change(payload)
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"workflow_job": {}}', "action"),
        (_broken(lambda p: p.pop("workflow_job")), "workflow_job"),
        (_broken(lambda p: p["workflow_job"].update(labels="self-hosted")),
         "workflow_job.labels"),
        (_broken(lambda p: p["workflow_job"].update(id="289782451")), "workflow_job.id"),
        (_broken(lambda p: p["workflow_job"]["labels"].append(3)), "workflow_job.labels.1"),
        (_broken(lambda p: p["repository"].pop("full_name")), "repository.full_name"),
        (_broken(lambda p: p["repository"].update(fork="no")), "repository.fork"),
    ],
)
def test_a_malformed_body_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(headers(), body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"X-GitHub-Delivery": DELIVERY}, "X-GitHub-Event"),
        ({"X-GitHub-Event": "workflow_job"}, "X-GitHub-Delivery"),
        (headers(delivery="../../etc"), "X-GitHub-Delivery"),
        (headers(delivery="x" * 65), "X-GitHub-Delivery"),
    ],
)
def test_missing_or_odd_headers_are_named(given: dict[str, str], field: str) -> None:
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(given, example("queued"))
    assert caught.value.field == field


def test_a_body_over_the_limit_is_refused_before_anything_else() -> None:
    huge = b" " * (MAX_BODY_BYTES + 1)
    with pytest.raises(BodyTooLarge):
        read_delivery(SECRET, headers(), huge)  # unsigned, yet the size is the answer
    with pytest.raises(BodyTooLarge):
        parse_delivery(headers(), huge)
    # the documented payloads are far below it
    assert max(len(example(e[0])) for e in EXAMPLES) * 50 < MAX_BODY_BYTES


def test_read_delivery_checks_the_signature_before_parsing() -> None:
    body = example("queued")
    signed = {**headers(), "X-Hub-Signature-256": sign(SECRET, body)}
    assert isinstance(read_delivery(SECRET, signed, body), WorkflowJobEvent)
    with pytest.raises(SignatureError):
        read_delivery(SECRET, headers(), body)
    # a forged, unparseable body is a signature problem, never a parse error
    with pytest.raises(SignatureError):
        read_delivery(SECRET, {**headers(), "X-Hub-Signature-256": sign(SECRET, body)}, b"{nope")
    garbage = b"{nope"
    with pytest.raises(MalformedDelivery) as caught:
        read_delivery(SECRET, {**headers(), "x-hub-signature-256": sign(SECRET, garbage)}, garbage)
    assert caught.value.field == "body"
