"""Every chaos mutant still applies to the code as it is (its old text occurs exactly once in the
file it names) and leaves Python that compiles: a refactor that moves a patched snippet must move
the mutant with it, or the scenario it proves would run against an unbroken scaler."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chaos.mutants import MUTANTS, apply_mutant

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_mutant_applies_and_compiles(name: str, tmp_path: Path) -> None:
    paths = sorted({path for path, _old, _new in MUTANTS[name]})
    for path in paths:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    apply_mutant(name, tmp_path)
    for path in paths:
        patched = (tmp_path / path).read_text()
        assert patched != (ROOT / path).read_text(), f"{name} left {path} unchanged"
        compile(patched, path, "exec")
