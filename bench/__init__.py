"""The benchmark harness: ``python -m bench.run [--quick] [--only P1,...]`` prints a table and
writes ``bench/results/latest.json``. One module per scenario, each with ``run(cfg) -> dict``."""
