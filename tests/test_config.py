"""Configuration: loading, env overrides, every validation error, redaction, check-config."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from scaler.commands import check_config
from scaler.config import ConfigError, Settings, load_settings, mask_url, parse_settings
from scaler.durations import format_duration, parse_duration
from scaler.secret import Secret
from scaler.telemetry.logging import redact_text

CANARY = "canary-Tok3n-5f1e2d"


def pool(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "thumbs", "app": "my-jobs", "queues": ["thumbs"], "image": "i"}
    base.update(kw)
    return base


def problems(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, env or {})
    return info.value.problems


def one_problem(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    found = problems(data, env)
    assert len(found) == 1, found
    return found[0]


# --- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        (12, 12),
        (0.25, 0.25),
        ("7", 7),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["-1s", -3, "abc", "10 parsecs", "", True, None, "nan", "1x"])
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.5, 90, 7200, 0, 30)] == [
        "500ms",
        "1m30s",
        "2h",
        "0s",
        "30s",
    ]


# --- loading ------------------------------------------------------------------------------------


def test_example_config_is_valid_and_packaged() -> None:
    text = resources.files("scaler.examples").joinpath("scaler.toml").read_text()
    assert "[[pools]]" in text
    path = Path(str(resources.files("scaler.examples").joinpath("scaler.toml")))
    s = load_settings(path, env={})
    assert [p.name for p in s.pools] == ["thumbs", "emails", "reports"]
    thumbs = s.pool("thumbs")
    assert thumbs.guest.cpus == 1 and thumbs.guest.memory_mb == 512
    assert thumbs.guest.cpu_kind == "shared"
    assert thumbs.max_runtime == 900 and thumbs.kill_timeout == 30
    assert s.app_cap("my-jobs") == 50 and s.app_cap("other") is None
    assert s.pool("reports").guest.memory_mb == 2048
    assert s.pool("emails").jobs_per_machine == 4


def test_defaults_without_a_file() -> None:
    s = load_settings(None, env={})
    assert s.fly.api_url == "https://api.machines.dev"
    assert s.fly.token is None
    assert s.redis.url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert s.scaler.max_machines == 100 and s.scaler.leader_ttl == 15
    assert s.pools == ()


def test_scaler_config_env_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[scaler]\nmax_machines = 7\n")
    assert load_settings(None, env={"SCALER_CONFIG": str(f)}).scaler.max_machines == 7


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    f = tmp_path / "bad.toml"
    f.write_text("[scaler\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_settings(f, env={})
    assert str(f) in str(info.value)


def test_settings_are_frozen() -> None:
    s = parse_settings({"pools": [pool()]}, {})
    with pytest.raises(ValueError, match="frozen"):
        s.scaler.max_machines = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        s.pools[0].max_machines = 3  # type: ignore[misc]
    assert isinstance(s.pools[0].queues, tuple)


def test_pool_lookup() -> None:
    s = parse_settings({"pools": [pool()]}, {})
    assert s.pool("thumbs").app == "my-jobs"
    with pytest.raises(KeyError, match="thumbs"):
        s.pool("nope")


# --- env overrides and secrets ------------------------------------------------------------------


def test_env_overrides() -> None:
    env = {
        "FLY_API_TOKEN": CANARY,
        "FLY_API_URL": "http://127.0.0.1:4280/",
        "REDIS_URL": "redis://:pw-" + CANARY + "@redis.internal:6380/2",
        "SCALER_ENQUEUE_TOKENS": " a-token-1 , b-token-2 ,",
    }
    s = parse_settings({"fly": {"api_url": "https://other"}}, env)
    assert s.fly.token == Secret(CANARY)
    assert s.fly.api_url == "http://127.0.0.1:4280"
    assert s.redis.url.get_secret_value().endswith("@redis.internal:6380/2")
    assert s.redis.safe_url == "redis://:**********@redis.internal:6380/2"
    assert [t.get_secret_value() for t in s.http.enqueue_tokens] == ["a-token-1", "b-token-2"]


def test_literal_token_in_file_is_refused() -> None:
    msg = one_problem({"fly": {"token": CANARY}})
    assert msg.startswith("fly.token:") and "FLY_API_TOKEN" in msg and "token_file" in msg
    assert CANARY not in msg
    assert "SCALER_ENQUEUE_TOKENS" in one_problem({"http": {"enqueue_tokens": ["x"]}})


def test_token_files(tmp_path: Path) -> None:
    tok = tmp_path / "fly"
    tok.write_text(CANARY + "\n")
    tokens = tmp_path / "enq"
    tokens.write_text("one-token\n\ntwo-token\n")
    data = {"fly": {"token_file": str(tok)}, "http": {"tokens_file": str(tokens)}}
    s = parse_settings(data, {})
    assert s.fly.token is not None and s.fly.token.get_secret_value() == CANARY
    assert len(s.http.enqueue_tokens) == 2
    # the environment wins over the file
    assert parse_settings(data, {"FLY_API_TOKEN": "env-token"}).fly.token == Secret("env-token")
    msg = one_problem({"fly": {"token_file": str(tmp_path / "missing")}})
    assert msg.startswith("fly.token_file: cannot read")


def test_secrets_never_printed() -> None:
    env = {
        "FLY_API_TOKEN": CANARY,
        "REDIS_URL": f"redis://user:{CANARY}x@h:6379/0",
        "SCALER_ENQUEUE_TOKENS": CANARY + "-enq",
    }
    s = parse_settings({"pools": [pool()]}, env)
    for text in (repr(s), str(s), s.describe(), str(s.redacted()), s.model_dump_json()):
        assert CANARY not in text
    assert "token=set" in s.describe()
    assert "redis://user:**********@h:6379/0" in s.describe()
    assert s.redacted()["http"]["enqueue_tokens"] == 1
    # loading registered every secret with the log redactor
    assert CANARY not in redact_text(f"a {CANARY} b {CANARY}x c {CANARY}-enq")


def test_bad_secret_values_are_not_echoed() -> None:
    msg = one_problem({}, {"REDIS_URL": f"http://:{CANARY}@h"})
    assert msg.startswith("redis.url (from env REDIS_URL):") and "scheme 'http'" in msg
    assert CANARY not in msg and "**********" in msg


def test_mask_url() -> None:
    assert mask_url("redis://:p@h:1/0") == "redis://:**********@h:1/0"
    assert mask_url("rediss://u:p@h/0") == "rediss://u:**********@h/0"
    assert mask_url("redis://h:6379") == "redis://h:6379"


# --- validation errors --------------------------------------------------------------------------


def test_unknown_keys_suggest_the_right_one() -> None:
    found = problems(
        {"scaler": {"maxmachines": 3}, "pools": [pool(maxmachines=3)], "flyy": {}},
    )
    assert "unknown key 'maxmachines' in [scaler] (did you mean 'max_machines'?)" in found
    assert "unknown key 'maxmachines' in [[pools]] #1 (did you mean 'max_machines'?)" in found
    assert "unknown key 'flyy' in the top level (did you mean 'fly'?)" in found
    msg = one_problem({"pools": [pool(guest={"mem": 256})]})
    assert msg.startswith("unknown key 'mem' in pools[0].guest")
    assert "memory_mb" in msg


def test_every_problem_is_listed_at_once() -> None:
    found = problems(
        {
            "fly": {"timeout": "-3s"},
            "scaler": {"max_machines": "ten"},
            "pools": [
                pool(name="Bad_Name", guest={"memory_mb": 300}, jobs_per_machine=2),
                pool(name="b", queues=["thumbs"], max_machines=-1),
            ],
        }
    )
    text = "\n".join(found)
    assert "fly.timeout: a duration cannot be negative" in text
    assert "scaler.max_machines: Input should be a valid integer" in text and "'ten'" in text
    assert "pools[0].name: 'Bad_Name' is not a valid pool name" in text
    assert "pools[0].guest.memory_mb: 300 is not allowed" in text
    assert "pools[0].jobs_per_machine: 'jobs_per_machine' applies to worker pools only" in text
    assert "pools[1].max_machines: Input should be greater than or equal to 0; got -1" in text
    assert "pools[1].queues: queue 'thumbs' is already served by pool 'Bad_Name'" in text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"pools": [pool(queues=[])]}, "pools[0].queues: a pool needs at least one queue"),
        ({"pools": [pool(queues=["a b"])]}, "pools[0].queues[0]: 'a b' is not a valid dramatiq"),
        ({"pools": [pool(queues=["x.DQ"])]}, "pools[0].queues: 'x.DQ' is dramatiq's delay queue"),
        ({"pools": [pool(), pool(queues=["other"])]}, "pools[1].name: 'thumbs' is already the"),
        ({"pools": [pool(size="shared-cpu-3x")]}, "pools[0].size: 'shared-cpu-3x' is not a known"),
        ({"pools": [pool(guest={"cpus": 3})]}, "pools[0].guest.cpus: 3 is not allowed"),
        ({"pools": [pool(guest={"cpu_kind": "gpu"})]}, "pools[0].guest.cpu_kind: 'gpu' is not"),
        ({"pools": [pool(max_machines=101)]}, "pools[0].max_machines: 101 is above scaler.max_m"),
        (
            {"apps": {"my-jobs": {"max_machines": 5}}, "pools": [pool(max_machines=6)]},
            "pools[0].max_machines: 6 is above apps.my-jobs.max_machines = 5",
        ),
        (
            {"apps": {"my-jobz": {"max_machines": 5}}, "pools": [pool()]},
            "apps.my-jobz: no pool uses app 'my-jobz' (did you mean 'my-jobs'?)",
        ),
        (
            {"apps": {"my-jobs": {"max_machines": -1}}, "pools": [pool()]},
            "apps.my-jobs.max_machines: Input should be greater than or equal to 0",
        ),
        ({"scaler": {"max_machines": -1}}, "scaler.max_machines: Input should be greater than"),
        (
            {"pools": [pool(mode="worker", max_launches=2)]},
            "pools[0].max_launches: 'max_launches' applies to per-job pools only",
        ),
        (
            {"pools": [pool(mode="worker", min_machines=11)]},
            "pools[0].min_machines: 11 is above max_machines = 10",
        ),
        (
            {"pools": [pool(mode="worker", target_latency="5s")]},
            "pools[0].target_latency: 'target_latency' is only used with scale_on = \"latency\"",
        ),
        (
            {
                "pools": [
                    pool(mode="worker", scale_on="prometheus", query="q", target_per_machine=2.0)
                ]
            },
            'pools[0].scale_on: "prometheus" needs [prometheus] url',
        ),
        (
            {"pools": [pool(mode="batch")]},
            "pools[0].mode: Input should be 'per-job', 'worker' or 'github'",
        ),
        ({"pools": [pool(stop_signal="SIGFOO")]}, "pools[0].stop_signal: 'SIGFOO' is not a known"),
        (
            {"pools": [pool(env={"FLY_API_TOKEN": "x"})]},
            "pools[0].env.FLY_API_TOKEN: the Fly token must never reach a machine",
        ),
        ({"pools": [pool(max_runtime="0s")]}, "pools[0].max_runtime: Input should be greater"),
        ({"pools": [pool(image=None)]}, "pools[0].image: Input should be a valid string"),
        (
            {"pools": [{"name": "x", "queues": ["q"], "image": "i"}]},
            "pools[0].app: required key is missing",
        ),
        ({"costs": {"shared-cpu-1": 0.1}}, "costs.shared-cpu-1: unknown size (did you mean"),
        ({"costs": {"shared-cpu-1x": -1.0}}, "costs.shared-cpu-1x: Input should be greater"),
        ({"costs": {"budget_per_hour": 0.0}}, "costs.budget_per_hour: 0.0 allows no machine"),
        ({"pools": [pool(budget_per_hour=-1.0)]}, "pools[0].budget_per_hour: Input should be grea"),
        (
            {"costs": {"budget_per_hour": 5.0}, "pools": [pool(budget_per_hour=6.0)]},
            "pools[0].budget_per_hour: 6.0 is above costs.budget_per_hour = 5.0, so it can never",
        ),
        (
            {"apps": {"my-jobs": {"budget_per_hour": 2.0}}, "pools": [pool(budget_per_hour=3.0)]},
            "pools[0].budget_per_hour: 3.0 is above apps.my-jobs.budget_per_hour = 2.0",
        ),
        (
            {"apps": {"jobs-2": {"budget_per_hour": 2.0}},
             "pools": [{"name": "t", "apps": ["jobs-1", "jobs-2"], "queues": ["t"], "image": "i",
                        "budget_per_hour": 3.0}]},
            "pools[0].budget_per_hour: 3.0 is above apps.jobs-2.budget_per_hour = 2.0",
        ),
        (
            {"apps": {"nobody": {"budget_per_hour": 2.0}}, "pools": [pool()]},
            "apps.nobody: no pool uses app 'nobody'",
        ),
        ({"http": {"port": 70000}}, "http.port: Input should be less than or equal to 65535"),
        ({"fly": {"api_url": "ftp://x"}}, "fly.api_url: expected an http:// or https:// URL"),
        ({"scaler": {"shared_rate_limits": "yes"}}, "scaler.shared_rate_limits: Input should be"),
        ({"pools": {}}, "pools: Input should be a list"),
    ],
)
def test_validation_errors(data: dict[str, Any], expected: str) -> None:
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_budgets_are_read_from_costs_apps_and_pools() -> None:
    s = parse_settings(
        {
            "costs": {"budget_per_hour": 12.5, "shared-cpu-1x": 0.001},
            "apps": {"my-jobs": {"budget_per_hour": 5}},
            "pools": [pool(budget_per_hour=2.5), pool(name="p2", queues=["q2"])],
        },
        {},
    )
    b = s.budgets
    assert (b.global_usd, dict(b.per_app)) == (12.5, {"my-jobs": 5.0})
    assert dict(b.per_pool) == {"thumbs": 2.5}
    assert s.price_overrides == {"shared-cpu-1x": 0.001}
    assert "budget_per_hour=$12.5" in s.describe() and "budget_per_hour=$2.5" in s.describe()
    assert not parse_settings({"pools": [pool()]}, {}).budgets.any


def test_prometheus_worker_pool_is_valid() -> None:
    p = pool(mode="worker", scale_on="prometheus", query="sum(x)", target_per_machine=2)
    s = parse_settings({"prometheus": {"url": "http://prom:9090"}, "pools": [p]}, {})
    assert s.pools[0].target_per_machine == 2.0 and s.pools[0].is_worker


def test_stop_signal_is_normalised() -> None:
    assert (
        parse_settings({"pools": [pool(stop_signal="term")]}, {}).pools[0].stop_signal == "SIGTERM"
    )


def test_model_validate_runs_cross_checks_too() -> None:
    with pytest.raises(ValueError, match="already the name"):
        Settings.model_validate({"pools": [pool(), pool(queues=["q2"])]})


# --- check-config -------------------------------------------------------------------------------


def run_check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    check_config.add_arguments(parser)
    rc = check_config.run(parser.parse_args(["-c", str(path)]))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_check_config_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", CANARY)
    monkeypatch.setenv("REDIS_URL", f"redis://:{CANARY}@h:6379/0")
    f = tmp_path / "s.toml"
    f.write_text('[[pools]]\nname = "p"\napp = "a"\nqueues = ["q"]\nimage = "i"\n')
    rc, out, _ = run_check(f, capsys)
    assert rc == 0
    assert "token=set" in out and "p: per-job" in out and "redis://:**********@h:6379/0" in out
    assert CANARY not in out


def test_check_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    f = tmp_path / "s.toml"
    f.write_text(f'[fly]\ntoken = "{CANARY}"\n[scaler]\nmaxmachines = 1\n')
    rc, out, err = run_check(f, capsys)
    assert rc == 2 and out == ""
    assert "fly.token: a literal token" in err and "did you mean 'max_machines'" in err
    assert CANARY not in err


def test_check_config_default_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCALER_CONFIG", raising=False)
    monkeypatch.setenv("FLY_API_TOKEN", CANARY)
    parser = argparse.ArgumentParser()
    check_config.add_arguments(parser)
    assert check_config.run(parser.parse_args([])) == 2
    assert "scaler.toml" in capsys.readouterr().err
    (tmp_path / "scaler.toml").write_text("")
    assert check_config.run(parser.parse_args([])) == 0


def test_http_actors_and_scheduler_switches() -> None:
    s = parse_settings(
        {"scaler": {"event_wakeups": False, "claim_grace": "3s"},
         "pools": [pool(http_actors=["thumbnail", "render_video"])]},
        env={},
    )
    assert s.scaler.event_wakeups is False
    assert s.scaler.claim_grace == 3.0
    assert s.pools[0].http_actors == ("thumbnail", "render_video")
    assert parse_settings({"pools": [pool()]}, env={}).pools[0].http_actors == ()


def test_bad_http_actor_name_is_refused_with_its_path() -> None:
    msg = one_problem({"pools": [pool(http_actors=["not an actor"])]})
    assert "pools[0].http_actors[0]" in msg
