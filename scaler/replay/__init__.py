"""Record what the scaler observes, and replay it through the real planner on a virtual clock.

- :mod:`~scaler.replay.trace`: the versioned JSONL trace format (docs/replay.md), read and write.
- :mod:`~scaler.replay.synthetic`: traces from a small grammar (``poisson rate=5/s for 10m``).
- :mod:`~scaler.replay.recorder`: ``scaler record``, polling Redis and Fly listings.
- :mod:`~scaler.replay.simfly`: a simulated Fly (timings, create rate limits) on a virtual clock.
- :mod:`~scaler.replay.simulator`: observe -> :func:`scaler.policy.plan` -> a model of act.
- :mod:`~scaler.replay.report`: per-pool numbers, JSON report and PNG chart.
"""
