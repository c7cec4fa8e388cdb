"""The PromQL signal of worker pools (``scale_on = "prometheus"``) against a real Prometheus:
PromQL literals evaluate without any scraped data."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler.loop.prometheus import PrometheusReader
from tests.scaler_harness import prometheus_server

pytestmark = pytest.mark.prometheus


async def test_scalar_vector_empty_and_bad_queries(tmp_path: Path) -> None:
    with prometheus_server(None, tmp_path) as base:
        reader = PrometheusReader(base, timeout=5)
        assert await reader.query_scalar("scalar(vector(3))") == 3.0
        assert await reader.query_scalar("vector(7)") == 7.0
        assert await reader.query_scalar('label_replace(vector(2), "a", "x", "", "") '
                                         'or label_replace(vector(5), "a", "y", "", "")') == 7.0
        assert await reader.query_scalar('up{job="nothing-here"}') is None  # unknown, not 0
        assert reader.last_error == "prometheus query returned no sample"
        assert await reader.query_scalar("sum(") is None
        assert reader.last_error is not None and "prometheus query failed" in reader.last_error
        await reader.aclose()


async def test_an_unreachable_prometheus_is_unknown() -> None:
    reader = PrometheusReader("http://127.0.0.1:1", timeout=1)
    assert await reader.query_scalar("vector(1)") is None
    assert reader.last_error is not None
    await reader.aclose()
