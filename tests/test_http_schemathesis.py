"""Schemathesis against the HTTP port, served by uvicorn over real HTTP with real Redis, using the
OpenAPI document the app itself serves: no 5xx on any input, and every response (status code,
content type, headers, body) conforms to the document."""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import redis.asyncio as aioredis
import schemathesis
import uvicorn
from schemathesis import GenerationMode, checks

from scaler.http.app import QueueInfo, create_http_app
from scaler.secret import Secret
from scaler.telemetry.metrics import Metrics

TOKEN = "schemathesis-token-41b7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


class _Server:
    """uvicorn serving the scaler's app on a free loopback port, in a thread with its own loop."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        # Listening before uvicorn starts: requests wait in the backlog, so no start-up polling.
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._redis = aioredis.Redis.from_url(redis_url)
        app = create_http_app(
            metrics=Metrics(), redis=self._redis, namespace=prefix, prefix=prefix,
            queues={"jobs": QueueInfo(frozenset({"work"}))}, tokens=[Secret(TOKEN)],
            ready=lambda: (True, "ok"), max_body_bytes=8192,
        )
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._run, name="http-under-test")

    def _run(self) -> None:
        async def serve() -> None:
            try:
                await self._server.serve(sockets=[self._socket])
            finally:
                await self._redis.aclose()

        asyncio.run(serve())

    def __enter__(self) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
        assert not self._thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def server(redis_url: str, redis_prefix: str) -> Iterator[_Server]:
    with _Server(redis_url, redis_prefix) as running:
        yield running


def _load(server: _Server) -> Any:
    config = schemathesis.Config.from_dict({"base-url": server.url})
    return schemathesis.openapi.from_url(f"{server.url}/v1/openapi.json", config=config)


def _fuzz(
    operation: Any, mode: GenerationMode, examples: int, headers: dict[str, str],
    checks_: list[Any], *, path_parameters: dict[str, str] | None = None,
    actor: str | None = None, seen: collections.Counter[int] | None = None,
    accepted: list[str] | None = None,
) -> None:
    # Driven by hand: schemathesis' pytest integration (from_fixture) does not run on pytest 9.
    @hypothesis.given(operation.as_strategy(mode, path_parameters=path_parameters))
    @hypothesis.settings(max_examples=examples, deadline=None, derandomize=True,
                         database=None, suppress_health_check=list(hypothesis.HealthCheck))
    def run(case: Any) -> None:
        if actor is not None and isinstance(case.body, dict):
            case.body["actor"] = actor  # still a valid body; now it can be accepted
        response = case.call_and_validate(headers=headers, checks=checks_)
        if seen is not None:
            seen[response.status_code] += 1
        if accepted is not None and response.status_code == 202:
            accepted.append(response.json()["message_id"])

    run()


def _operations(server: _Server) -> dict[str, Any]:
    return {op.label: op for op in (r.ok() for r in _load(server).get_all_operations())}


ENQUEUE = "POST /v1/queues/{queue}/messages"
LOOKUP = "GET /v1/messages/{message_id}"


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_every_operation_conforms_and_never_fails_with_5xx(
    server: _Server, mode: GenerationMode
) -> None:
    operations = _operations(server)
    # schemathesis leaves out the document's own path
    assert set(operations) == {"GET /metrics", "GET /healthz", "GET /readyz", ENQUEUE, LOOKUP}
    for operation in operations.values():
        if mode is GenerationMode.NEGATIVE and not (operation.path_parameters or operation.body):
            continue  # nothing to get wrong
        _fuzz(operation, mode, 25, AUTH, CHECKS)
    # Bodies for the configured queue reach validation, and (with an allowed actor) the write.
    _fuzz(operations[ENQUEUE], mode, 25, AUTH, CHECKS, path_parameters={"queue": "jobs"})


def test_accepted_messages_and_their_state_conform(server: _Server) -> None:
    operations = _operations(server)
    seen: collections.Counter[int] = collections.Counter()
    accepted: list[str] = []
    _fuzz(operations[ENQUEUE], GenerationMode.POSITIVE, 40, AUTH, CHECKS,
          path_parameters={"queue": "jobs"}, actor="work", seen=seen, accepted=accepted)
    assert seen[202] > 0 and set(seen) <= {200, 202, 409, 422}, seen
    looked_up: collections.Counter[int] = collections.Counter()
    _fuzz(operations[LOOKUP], GenerationMode.POSITIVE, 5, AUTH, CHECKS,
          path_parameters={"message_id": accepted[0]}, seen=looked_up)
    assert looked_up[200] > 0, looked_up


def test_unauthenticated_and_wrong_token_requests_conform(server: _Server) -> None:
    for operation in _operations(server).values():
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            _fuzz(operation, GenerationMode.POSITIVE, 5, headers, CHECKS[:5])
