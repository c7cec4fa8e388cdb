"""A PromQL signal for worker pools that scale on a query (``scale_on = "prometheus"``)."""

from __future__ import annotations

import math

import httpx

__all__ = ["PrometheusReader"]


class PrometheusReader:
    """Runs instant queries against a Prometheus HTTP API with a timeout.

    A query that fails, times out, or returns no sample gives ``None`` (unknown: the planner then
    neither scales down nor reaps on it) and leaves the reason in :attr:`last_error`.
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"), timeout=timeout, transport=transport
        )
        self.last_error: str | None = None

    async def query_scalar(self, query: str) -> float | None:
        """The query's value: a scalar, or the sum of an instant vector's samples."""
        try:
            resp = await self._client.get("/api/v1/query", params={"query": query})
            resp.raise_for_status()
            data = resp.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self.last_error = f"prometheus query failed: {type(exc).__name__}: {exc}"
            return None
        result = data.get("result")
        values: list[float] = []
        if data.get("resultType") == "scalar" and isinstance(result, list):
            values = [float(result[1])]
        elif data.get("resultType") == "vector" and isinstance(result, list):
            values = [float(s["value"][1]) for s in result]
        if not values or any(math.isnan(v) for v in values):
            self.last_error = "prometheus query returned no sample"
            return None
        self.last_error = None
        return sum(values)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
