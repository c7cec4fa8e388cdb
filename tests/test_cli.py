"""The `scaler` command line: every subcommand is wired, and a bad config refuses to start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scaler.cli import SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def test_every_subcommand_is_wired() -> None:
    parser = build_parser()
    for name, (module, _help) in SUBCOMMANDS.items():
        assert parser.parse_args([name])._module == module


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
    assert "``" not in out  # plain text, not the module docstring's markup
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "``" not in capsys.readouterr().out, name


def test_run_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "scaler.toml"
    config.write_text('[scaler]\nmax_machines = -1\n[[pools]]\nname = "Bad Name"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("FLY_API_TOKEN", "REDIS_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "run", "-c", str(config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )
    assert proc.returncode == 2
    assert "not starting" in proc.stderr
    assert "scaler.max_machines" in proc.stderr
    assert "pools[0].name" in proc.stderr
    assert "pools[0].app" in proc.stderr  # a missing key is named too


def test_run_refuses_a_missing_config_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "run", "-c", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "nope.toml" in proc.stderr


def test_run_refuses_a_busy_http_port_naming_it(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        config = tmp_path / "scaler.toml"
        config.write_text(
            f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
            f'[redis]\nurl = "{redis_url}"\nprefix = "{redis_prefix}"\n'
            '[[pools]]\nname = "p"\napp = "a"\nqueues = ["q"]\nimage = "i"\n')
        env = {**os.environ, "FLY_API_TOKEN": "cli-test-token"}
        env.pop("REDIS_URL", None)
        proc = subprocess.run(
            [sys.executable, "-m", "scaler.cli", "run", "-c", str(config), "--log-level", "error"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
        )
    assert proc.returncode == 2
    assert f"http.port: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("cannot listen") == 1
