"""The chaos suite: ``python -m chaos [--quick] [--only R1,R4] [--rev REV | --mutant NAME]``.

Each scenario (``chaos/scenarios/r<NN>_<slug>.py``) drives the real pieces: Redis, ``scaler
local-api`` with faults, ``scaler run`` processes that are killed, frozen and restarted, and a plain
dramatiq app. It measures whether the scaler's invariants held (one machine per job, no lost job, no
leaked machine, caps, rate limits, one actor at a time) and says which one broke.

The framework: :mod:`chaos.harness` (:class:`~chaos.harness.ChaosContext`, what a scenario gets),
:mod:`chaos.result` (:class:`~chaos.result.ScenarioResult`, what it returns), :mod:`chaos.registry`
(discovery), :mod:`chaos.tree` and :mod:`chaos.mutants` (running another tree's scaler and runner).
This package stays light to import: machines import :mod:`chaos.actors` from it.
"""
