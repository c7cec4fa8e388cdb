"""The spend of the last hour at every simulated instant, per pool and in all: what a budget per
hour would be checked against, so a replay can show the peak and a test can assert a budget held."""

from __future__ import annotations

from collections import deque

__all__ = ["HOUR_S", "RollingSpend"]

HOUR_S = 3600.0


class RollingSpend:
    """Sums cost accrued within the trailing ``window`` seconds; keeps the highest sum seen.

    Cost is added as the simulator advances (the cost of an interval counted at its end), so the
    window's resolution is the spacing of simulated events, well under a second while machines
    change."""

    def __init__(self, window: float = HOUR_S) -> None:
        self.window = window
        self._entries: deque[tuple[float, float]] = deque()
        self.total = 0.0
        self.peak = 0.0

    def add(self, t: float, usd: float) -> None:
        """Cost ``usd`` accrued up to ``t``; forget what fell out of the window."""
        if usd > 0:
            self._entries.append((t, usd))
            self.total += usd
        while self._entries and self._entries[0][0] <= t - self.window:
            self.total -= self._entries.popleft()[1]
        self.peak = max(self.peak, self.total)
