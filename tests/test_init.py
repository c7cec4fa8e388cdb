"""``scaler init``: a folder with a config that checks and an actors module that declares what the
config's pools run; nothing overwritten; the app created on a Machines API when asked."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaler.commands import check_config, init
from scaler.local.server import LocalAPIServer

ROOT = Path(__file__).resolve().parent.parent


def run_init(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    init.add_arguments(parser)
    return init.run(parser.parse_args(list(argv)))


def test_the_scaffold_checks_and_its_actors_match_its_pools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "init-test-token")
    assert run_init(str(tmp_path), "--app", "demo-jobs") == 0
    out = capsys.readouterr().out
    assert "fly apps create demo-jobs" in out and "scaler run -c" in out

    parser = argparse.ArgumentParser()
    check_config.add_arguments(parser)
    assert check_config.run(parser.parse_args(["-c", str(tmp_path / "scaler.toml")])) == 0
    checked = capsys.readouterr()
    assert "warning" not in checked.err
    assert "reports: per-job  app=demo-jobs" in checked.out and "emails: worker" in checked.out

    # The actors module imports as a machine would (SCALER_ACTORS=tasks) and declares one actor
    # per pool queue.
    probe = ("import dramatiq, tasks; b = dramatiq.get_broker(); "
             "print(sorted((a.actor_name, a.queue_name) for a in map(b.get_actor, b.actors)))")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[('report', 'reports'), ('send_email', 'emails')]"


def test_existing_files_are_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tasks.py").write_text("# mine\n")
    assert run_init(str(tmp_path)) == 2
    assert "tasks.py already exist" in capsys.readouterr().err
    assert (tmp_path / "tasks.py").read_text() == "# mine\n"
    assert not (tmp_path / "scaler.toml").exists()
    assert run_init(str(tmp_path), "--force") == 0
    assert "dramatiq" in (tmp_path / "tasks.py").read_text()


def test_a_bad_app_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_init(str(tmp_path), "--app", "My_App") == 2
    assert "--app 'My_App'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_create_apps_on_the_local_api(
    tmp_path: Path, local_api: LocalAPIServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", local_api.token)
    app = f"init-{os.getpid()}"
    assert run_init(str(tmp_path), "--app", app, "--api-url", local_api.url,
                    "--create-apps") == 0
    out = capsys.readouterr().out
    assert f"created app {app}" in out and "fly apps create" not in out
    with local_api.client() as c:
        assert c.get(f"/v1/apps/{app}").status_code == 200
    assert f'api_url = "{local_api.url}"' in (tmp_path / "scaler.toml").read_text()
    # A second run finds the app there: fine, said so.
    assert run_init(str(tmp_path), "--app", app, "--api-url", local_api.url, "--create-apps",
                    "--force") == 0
    assert f"app {app} already exists" in capsys.readouterr().out


def test_create_apps_without_a_token_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    assert run_init(str(tmp_path), "--create-apps") == 1
    assert "FLY_API_TOKEN" in capsys.readouterr().err
