"""The shape of the tree: arrows point down (the scaler never imports the app toolkit), the toolkit
stays light to import, and every repository path the docs cite exists."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_no_scaler_module_imports_the_app_toolkit() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "workers")
        for p in (ROOT / "scaler").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_toolkit_imports_neither_httpx_nor_the_fly_client() -> None:
    code = ("import sys, workers.enqueue; print(sorted(m for m in sys.modules "
            "if m.startswith(('httpx', 'scaler.fly.client', 'scaler.loop', 'structlog'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


_CITED = re.compile(r"`((?:scaler|workers|tests|bench|chaos|docs|deploy|grafana)/[\w./-]+)`")


def test_every_path_the_docs_cite_exists() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = {
        f"{d.relative_to(ROOT)}: {cited}"
        for d in docs if d.exists()
        for cited in _CITED.findall(d.read_text())
        if not (ROOT / cited.rstrip("/")).exists() and "*" not in cited and "{" not in cited
    }
    assert missing == set()


def test_every_doc_the_code_cites_exists() -> None:
    cited = re.compile(r"docs/[\w.-]+\.md")
    missing = {
        f"{p.relative_to(ROOT)}: {name}"
        for p in [*(ROOT / "scaler").rglob("*.py"), *(ROOT / "scaler").rglob("*.md"),
                  *(ROOT / "tests").glob("*.py")]
        for name in cited.findall(p.read_text())
        if not (ROOT / name).exists()
    }
    assert missing == set()


def test_the_license_is_an_spdx_string() -> None:
    """A license table is deprecated by setuptools and printed ~45 lines of warnings at install."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project["license"], str) and project["license"] == "MIT"
