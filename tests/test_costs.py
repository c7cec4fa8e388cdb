"""The estimated price table behind the cost metrics."""

from __future__ import annotations

import pytest

from scaler.telemetry.costs import MONTHLY_USD, SECONDS_PER_MONTH, cost_per_second, size_label


def test_size_labels() -> None:
    assert size_label("shared", 2) == "shared-cpu-2x"
    assert size_label("performance", 4) == "performance-4x"


def test_preset_price_and_extra_memory() -> None:
    base = cost_per_second("shared", 1, 256)
    assert base == pytest.approx(MONTHLY_USD["shared-cpu-1x"][0] / SECONDS_PER_MONTH)
    # 1 GB more than the preset's 256 MB costs $5 a month more
    assert cost_per_second("shared", 1, 1280) - base == pytest.approx(5.0 / SECONDS_PER_MONTH)
    assert cost_per_second("shared", 1, 0) == base  # unknown memory: the preset's price


def test_overrides_and_unknown_sizes() -> None:
    assert cost_per_second("shared", 1, 256, {"shared-cpu-1x": 0.5}) == 0.5
    assert cost_per_second("shared", 3, 768) == 0.0  # no such preset: no estimate
