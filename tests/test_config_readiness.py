"""Config mistakes a user actually makes: each is refused (or warned about) naming the key and the
fix, and none echoes a secret."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scaler.commands import check_config
from scaler.commands import run as run_command
from scaler.config import ConfigError, load_settings, parse_settings

CANARY = "cAnArY-5e1d-pw"
POOL = '[[pools]]\nname = "p"\napp = "a"\nqueues = ["q"]\nimage = "i"\n'


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    check_config.add_arguments(parser)
    rc = check_config.run(parser.parse_args(["-c", str(path)]))
    out = capsys.readouterr()
    return rc, out.out, out.err


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, {})
    return info.value.problems


def test_no_token_is_refused_by_check_config_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    f = tmp_path / "s.toml"
    f.write_text(POOL)
    rc, out, err = check(f, capsys)
    assert rc == 2 and "OK" not in out
    assert "FLY_API_TOKEN" in err and "fly.token_file" in err

    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    rc = run_command.run(parser.parse_args(["-c", str(f), "--log-format", "json"]))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "FLY_API_TOKEN" in err  # one line, no traceback


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_bytes(b'image = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text .*save it as UTF-8"):
        load_settings(f, {})


def test_an_unknown_region_lists_the_valid_ones() -> None:
    found = problems({"pools": [{"name": "p", "app": "a", "queues": ["q"], "image": "i",
                                 "region": "mars"}]})
    assert any(p.startswith("pools[0].region: 'mars' is not a Fly region") and "iad" in p
               for p in found), found
    ok = parse_settings({"pools": [{"name": "p", "app": "a", "queues": ["q"], "image": "i",
                                    "region": "ord"}]}, {})
    assert ok.pools[0].region == "ord"


def test_a_redis_database_that_is_not_a_number() -> None:
    found = problems({"redis": {"url": "redis://localhost:6379/abc"}})
    assert any("redis.url: database 'abc' is not a number" in p for p in found), found


def test_a_mistyped_redis_url_never_echoes_its_password() -> None:
    found = problems({"redis": {"url": f"redis//:{CANARY}@host:6379"}})
    text = "\n".join(found)
    assert "redis.url" in text and CANARY not in text


def test_only_keys_the_user_wrote_are_reported() -> None:
    found = problems({"pools": [{"name": "p", "mode": "worker", "app": "a", "queues": ["q"],
                                 "image": "i", "max_machines": -1}]})
    assert any(p.startswith("pools[0].max_machines") for p in found)
    assert not any("min_machines" in p or "warm_machines" in p for p in found), found


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("", "pools: no pool is configured"),
        ("[scaler]\nmax_machines = 0\n" + POOL, "scaler.max_machines: 0 means no machine"),
        (POOL + "max_machines = 0\n", "pools[0].max_machines: 0 means pool 'p' never launches"),
    ],
)
def test_configs_that_do_nothing_are_warned_about(
    text: str, warning: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", CANARY)
    f = tmp_path / "s.toml"
    f.write_text(text)
    rc, out, err = check(f, capsys)
    assert rc == 0 and "OK" in out
    assert f"warning: {warning}" in err


def test_a_secret_never_rides_into_machines_under_another_key() -> None:
    token = "FlyV1 fm2_" + CANARY
    pool = {"name": "p", "app": "a", "queues": ["q"], "image": "i",
            "env": {"DEPLOY_KEY": token, "REDIS_URL": f"redis://:{CANARY}@h:6379/0"}}
    with pytest.raises(ConfigError) as info:
        parse_settings({"pools": [pool]}, {"FLY_API_TOKEN": token})
    text = str(info.value)
    assert "pools[0].env.DEPLOY_KEY: its value holds a secret" in text
    assert "REDIS_URL" not in text  # runners need Redis: its URL is allowed
    assert CANARY not in text
