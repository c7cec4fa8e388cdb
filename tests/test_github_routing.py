"""Routing a workflow_job to a runner pool: labels (all of them, self-hosted implied), the
repository and organization allow-list, forks; refusals from a small fixed set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from scaler.github.events import WorkflowJobEvent, parse_delivery
from scaler.github.routing import RefusalReason, Refused, Routed, RunnerPoolRule, route

DATA = Path(__file__).parent / "data/github"


def _documented() -> WorkflowJobEvent:
    body = (DATA / "waiting.payload.json").read_bytes()  # labels [self-hosted, k8s]
    event = parse_delivery({"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-1"}, body)
    assert isinstance(event, WorkflowJobEvent)
    return event


BASE = _documented()
REPO = BASE.repository  # lineville/elastic-machines-testing, owned by the user lineville


def job(labels: tuple[str, ...] = ("self-hosted", "k8s"), repository: str = REPO,
        owner: str = "lineville", fork: bool = False) -> WorkflowJobEvent:
    return dataclasses.replace(BASE, labels=labels, repository=repository, owner=owner, fork=fork)


K8S = RunnerPoolRule("k8s", ["k8s"], repositories=[REPO])
GPU = RunnerPoolRule("gpu", ["gpu", "linux", "x64"], organizations=["acme"])
WIDE = RunnerPoolRule("wide", ["k8s", "big"], organizations=["lineville", "acme"],
                      allow_forks=True)


@pytest.mark.parametrize(
    ("event", "rules", "expected"),
    [
        # labels: all of the job's labels must be served; self-hosted is implied
        (job(), [K8S], "k8s"),
        (job(labels=("k8s",)), [K8S], "k8s"),
        (job(labels=("Self-Hosted", "K8S")), [K8S], "k8s"),
        (job(labels=("self-hosted", "k8s", "big")), [K8S], RefusalReason.LABELS),
        (job(labels=("self-hosted", "k8s", "big")), [K8S, WIDE], "wide"),
        (job(labels=("self-hosted",)), [K8S], RefusalReason.LABELS),
        (job(labels=()), [K8S], RefusalReason.LABELS),
        (job(labels=("ubuntu-latest",)), [K8S, GPU, WIDE], RefusalReason.LABELS),
        (job(labels=("gpu", "linux"), repository="acme/app", owner="acme"), [GPU], "gpu"),
        (job(labels=("gpu", "arm64"), repository="acme/app", owner="acme"), [GPU],
         RefusalReason.LABELS),
        # repositories and organizations
        (job(repository="lineville/other"), [K8S], RefusalReason.REPOSITORY),
        (job(repository="LineVille/Elastic-Machines-Testing"), [K8S], "k8s"),
        (job(repository="lineville/other"), [K8S, WIDE], "wide"),
        (job(labels=("gpu",), repository="evil/app", owner="evil"), [GPU],
         RefusalReason.REPOSITORY),
        (job(labels=("gpu",), repository="acme/app", owner="ACME"), [GPU], "gpu"),
        # forks
        (job(fork=True), [K8S], RefusalReason.FORK),
        (job(fork=True), [K8S, WIDE], "wide"),
        (job(labels=("gpu",), repository="acme/app", owner="acme", fork=True), [GPU],
         RefusalReason.FORK),
        # no rules at all
        (job(), [], RefusalReason.LABELS),
    ],
)
def test_route(event: WorkflowJobEvent, rules: list[RunnerPoolRule],
               expected: str | RefusalReason) -> None:
    result = route(event, rules)
    if isinstance(expected, RefusalReason):
        assert result == Refused(expected)
    else:
        assert isinstance(result, Routed)
        assert result.pool == expected


def test_the_first_rule_that_takes_a_job_wins() -> None:
    first = RunnerPoolRule("first", ["k8s"], organizations=["lineville"])
    assert route(job(), [first, K8S]) == Routed(first)
    assert route(job(), [K8S, first]) == Routed(K8S)


def test_the_refusal_is_the_closest_miss_whatever_the_order() -> None:
    fork_only = RunnerPoolRule("f", ["k8s"], repositories=[REPO])
    other_repo = RunnerPoolRule("o", ["k8s"], repositories=["x/y"])
    for rules in ([GPU, other_repo, fork_only], [fork_only, other_repo, GPU]):
        assert route(job(fork=True), rules) == Refused(RefusalReason.FORK)
    assert route(job(), [GPU, other_repo]) == Refused(RefusalReason.REPOSITORY)


def test_reasons_are_a_small_fixed_set() -> None:
    assert {r.value for r in RefusalReason} == {"labels", "repository", "fork"}


def test_runner_labels_carry_self_hosted_and_the_served_labels() -> None:
    assert GPU.runner_labels() == ("self-hosted", "gpu", "linux", "x64")
    # what a runner of the pool is registered with serves every job the pool takes
    event = job(labels=("gpu", "linux"), repository="acme/app", owner="acme")
    assert set(event.labels) <= set(GPU.runner_labels())


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"pool": "", "labels": ["a"], "repositories": ["o/r"]}, "pool name"),
        ({"pool": "p", "labels": [], "repositories": ["o/r"]}, "labels"),
        ({"pool": "p", "labels": ["self-hosted"], "repositories": ["o/r"]}, "labels"),
        ({"pool": "p", "labels": ["a", ""], "repositories": ["o/r"]}, "labels"),
        ({"pool": "p", "labels": ["a"]}, "at least one repository or organization"),
        ({"pool": "p", "labels": ["a"], "repositories": ["just-a-name"]}, "owner/name"),
        ({"pool": "p", "labels": ["a"], "organizations": ["a/b"]}, "logins"),
    ],
)
def test_a_rule_that_would_be_unsafe_or_useless_is_refused(
    kwargs: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        RunnerPoolRule(**kwargs)  # type: ignore[arg-type]


def test_rules_compare_by_value() -> None:
    assert RunnerPoolRule("p", ["A", "b"], ["O/R"]) == RunnerPoolRule("p", ["b", "a"], ["o/r"])
