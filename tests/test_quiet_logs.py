"""The normal path is quiet, a retried Fly answer is said once per attempt with its cause."""

from __future__ import annotations

import logging

import httpx
import pytest

from scaler.fly import errors as fe
from scaler.fly.retry import RetryPolicy
from tests.test_fly_client import CANARY, Recorder, fast_client


async def test_a_retried_answer_is_logged_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scaler.fly")
    rec = Recorder(httpx.Response(503, text="upstream busy"), httpx.Response(503, text="again"))
    async with fast_client(rec, retry=RetryPolicy(max_attempts=2, max_elapsed=1000)) as fly:
        with pytest.raises(fe.ServerError):
            await fly.get_machine("a1", "m1")
    retried = [r.getMessage() for r in caplog.records if "fly call retried" in r.getMessage()]
    assert len(retried) == 1  # the last failure is the caller's to report, not a retry
    assert "/apps/a1/machines/m1" in retried[0] and "upstream busy" in retried[0]
    assert CANARY not in caplog.text
