"""The deploy files (docker is not run here): fly.toml, the Dockerfiles, docker-compose and the
configs they carry parse, agree with each other and with the code (ports, env names, commands,
files), and the compose init script really creates the app on a local Machines API."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from scaler.cli import build_parser
from scaler.config import ConfigError, HttpSettings, load_settings
from scaler.local.server import LocalAPIServer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
FLY_TOML = DEPLOY / "fly.toml"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILES = (DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.worker")
SECRETS = ("FLY_API_TOKEN", "REDIS_URL", "SCALER_ENQUEUE_TOKENS")
OUR_ENV = re.compile(r"^(FLY_|REDIS_|SCALER_)")


def fly_toml() -> dict[str, Any]:
    return tomllib.loads(FLY_TOML.read_text())


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with an empty environment."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def service_env(service: str) -> dict[str, str]:
    env = compose()["services"][service].get("environment", {})
    return {k: interpolate(str(v)) for k, v in env.items()}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for line in dockerfile.read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = logical.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            logical = ""
    return out


def code_reads(name: str) -> bool:
    """Whether some module of scaler/ or workers/ names the env variable as a string literal."""
    literal = re.compile(rf"[\"']{re.escape(name)}[\"']")
    return any(
        literal.search(path.read_text())
        for package in ("scaler", "workers")
        for path in (ROOT / package).rglob("*.py")
    )


# --- fly.toml ---------------------------------------------------------------------------------


def test_fly_toml_ports_match_the_config_default() -> None:
    fly = fly_toml()
    port = HttpSettings().port
    assert fly["http_service"]["internal_port"] == port
    assert fly["metrics"] == {"port": port, "path": "/metrics"}
    assert load_settings(DEPLOY / "scaler.fly.toml", env={}).http.port == port


def test_fly_toml_builds_an_existing_dockerfile_and_keeps_the_scaler_running() -> None:
    fly = fly_toml()
    assert (FLY_TOML.parent / fly["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert fly["app"], "an app name placeholder"
    service = fly["http_service"]
    assert service["auto_stop_machines"] in ("off", False)
    assert service["min_machines_running"] >= 1
    assert fly["vm"][0]["size"]


def test_fly_toml_keeps_secrets_out_of_env_and_documents_them() -> None:
    fly = fly_toml()
    for name in SECRETS:
        assert name not in fly["env"], f"{name} is a secret: use fly secrets set"
        assert re.search(rf"^# - {name}:", FLY_TOML.read_text(), re.M), f"document {name}"
    text = FLY_TOML.read_text()
    assert "fly tokens create deploy -a <worker-app>" in text
    assert "fly secrets set" in text


def test_fly_config_file_validates() -> None:
    settings = load_settings(DEPLOY / "scaler.fly.toml", env={"FLY_API_TOKEN": "x"})
    assert settings.pools
    for pool in settings.pools:
        assert pool.cmd is not None and pool.cmd[:3] == ("python", "-m", "workers.runner")
        assert "SCALER_ACTORS" in pool.env


# --- env names --------------------------------------------------------------------------------


def deploy_env_names() -> set[str]:
    names = set(fly_toml()["env"]) | set(SECRETS)
    names |= set(service_env("scaler"))
    for dockerfile in DOCKERFILES:
        for word, args in instructions(dockerfile):
            if word == "ENV":
                names |= set(re.findall(r"(\w+)=", args))
    for config in ("scaler.fly.toml", "scaler.compose.toml"):
        for pool in tomllib.loads((DEPLOY / config).read_text()).get("pools", []):
            names |= set(pool.get("env", {}))
    return {n for n in names if OUR_ENV.match(n)}


def test_every_env_name_in_the_deploy_files_is_read_by_the_code() -> None:
    names = deploy_env_names()
    assert {"FLY_API_TOKEN", "FLY_API_URL", "REDIS_URL", "SCALER_CONFIG"} <= names
    unread = sorted(n for n in names if not code_reads(n))
    assert not unread, f"deploy files set env the code never reads: {unread}"


# --- Dockerfiles ------------------------------------------------------------------------------


def dockerignore_allows(dockerfile: Path, source: str) -> bool:
    """Whether ``<Dockerfile>.dockerignore`` (last matching rule wins) lets ``source`` through."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    allowed = True
    for raw in ignore.read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(source, pattern) or source.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist_and_are_not_ignored(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    assert steps[0] == ("FROM", "python:3.11-slim AS build")
    copies = [args for word, args in steps if word == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such file"
            assert dockerignore_allows(dockerfile, source.rstrip("/")), (
                f"{dockerfile.name}: {source} is excluded by its .dockerignore")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = [args for word, args in instructions(dockerfile) if word == "USER"]
    assert users and users[-1] not in ("root", "0")


def cmd_of(dockerfile: Path) -> list[str]:
    (cmd,) = [args for word, args in instructions(dockerfile) if word == "CMD"]
    argv: list[str] = yaml.safe_load(cmd)  # the exec form is a JSON array
    return argv


def test_scaler_image_runs_the_console_script_with_the_baked_config() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    argv = cmd_of(DEPLOY / "Dockerfile")
    assert argv == ["scaler", "run", "-c", "/etc/fly-scaler/scaler.toml"]
    assert argv[0] in scripts
    copies = [args for word, args in instructions(DEPLOY / "Dockerfile") if word == "COPY"]
    assert "deploy/scaler.fly.toml /etc/fly-scaler/scaler.toml" in copies


def test_worker_image_runs_the_runner_module() -> None:
    argv = cmd_of(DEPLOY / "Dockerfile.worker")
    assert argv == ["python", "-m", "workers.runner"]
    assert (ROOT / "workers" / "runner.py").is_file()


# --- docker-compose ---------------------------------------------------------------------------


def test_compose_builds_and_mounts_files_that_exist() -> None:
    services = compose()["services"]
    assert {"redis", "local-api", "scaler", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT, name
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            assert (COMPOSE.parent / host).exists(), f"{name} mounts missing {host}"


def test_compose_mounts_the_prometheus_config_and_its_rule_files() -> None:
    mounts = dict(v.split(":")[1::-1] for v in compose()["services"]["prometheus"]["volumes"])
    config_path = "/etc/prometheus/prometheus.yml"
    assert (COMPOSE.parent / mounts[config_path]).resolve() == DEPLOY / "prometheus/prometheus.yml"
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounts, f"{rule_file} is not mounted"


def test_compose_scaler_config_points_at_the_compose_services() -> None:
    services = compose()["services"]
    local_api = [interpolate(str(a)) for a in services["local-api"]["command"]]
    env = service_env("scaler")
    settings = load_settings(DEPLOY / "scaler.compose.toml", env=env)
    api = urlsplit(settings.fly.api_url)
    assert api.hostname in services
    assert str(api.port) in local_api, "the local API's --port"
    redis = urlsplit(settings.redis.url.get_secret_value())
    assert redis.hostname in services
    assert env["FLY_API_TOKEN"] in local_api, "the local API's --token"
    mounts = dict(v.split(":")[1::-1] for v in services["scaler"]["volumes"])
    assert (COMPOSE.parent / mounts["/etc/fly-scaler/scaler.toml"]).resolve() == (
        DEPLOY / "scaler.compose.toml")
    targets = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())["scrape_configs"]
    (scaler_job,) = [job for job in targets if job["job_name"] == "fly-scaler"]
    assert scaler_job["static_configs"][0]["targets"] == [f"scaler:{settings.http.port}"]
    for pool in settings.pools:
        assert pool.app == services["local-api-init"]["environment"]["APP_NAME"]


def scaler_commands() -> list[tuple[str, list[str]]]:
    commands = [("Dockerfile", cmd_of(DEPLOY / "Dockerfile"))]
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command[0] == "scaler":
            commands.append((name, [interpolate(str(a)) for a in command]))
    return commands


@pytest.mark.parametrize("where,argv", scaler_commands(), ids=[w for w, _ in scaler_commands()])
def test_scaler_commands_parse_with_the_real_cli(where: str, argv: list[str]) -> None:
    args = build_parser().parse_args(argv[1:])
    assert not getattr(args, "_missing", False), f"`scaler {argv[1]}` ({where}) does not import"
    assert args.command == argv[1]


def test_compose_local_api_listens_beyond_loopback_with_a_token() -> None:
    command = compose()["services"]["local-api"]["command"]
    args = build_parser().parse_args([interpolate(str(a)) for a in command[1:]])
    assert args.host == "0.0.0.0" and args.allow_remote and args.token


def test_compose_init_script_creates_the_app_and_is_idempotent(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    server = local_api_factory(runtime="sim")
    service = compose()["services"]["local-api-init"]
    env = {**os.environ, **{k: interpolate(str(v)) for k, v in service["environment"].items()}}
    env["FLY_API_URL"] = server.url
    env["FLY_API_TOKEN"] = server.token
    command = service["command"]
    assert command[:2] == ["python", "-c"]
    for _ in range(2):  # compose may run it again on `up`
        done = subprocess.run([sys.executable, "-c", command[2]], env=env, timeout=60,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    assert "local-workers" in server.state.apps


# --- the GitHub Actions runner image and the github pool example --------------------------------

RUNNER_DOCKERFILE = DEPLOY / "Dockerfile.github-runner"
JIT_ENV = "GITHUB_RUNNER_JITCONFIG"


def test_runner_image_is_githubs_runner_pinned_and_runs_as_runner() -> None:
    steps = instructions(RUNNER_DOCKERFILE)
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG")
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["RUNNER_VERSION"]), "pin a runner release"
    froms = [a for word, a in steps if word == "FROM"]
    assert froms == ["ghcr.io/actions/actions-runner:${RUNNER_VERSION}"]
    users = [a for word, a in steps if word == "USER"]
    assert users[-1] == "runner"
    assert not [a for word, a in steps if word in ("COPY", "ADD")], "it needs no build context"
    assert dockerignore_allows(RUNNER_DOCKERFILE, "scaler") is False


def _run_runner_cmd(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's CMD, run by bash in a directory whose ``run.sh`` reports what it was given."""
    argv = cmd_of(RUNNER_DOCKERFILE)
    fake = tmp_path / "run.sh"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n'
                    'echo "env:${GITHUB_RUNNER_JITCONFIG-unset}"\n')
    fake.chmod(0o755)
    return subprocess.run(["bash", *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", ""), **env}, timeout=30)


def test_runner_image_gives_run_sh_the_jit_config_and_not_its_steps(tmp_path: Path) -> None:
    argv = cmd_of(RUNNER_DOCKERFILE)
    assert argv[0] == "/bin/bash" and "./run.sh --jitconfig" in argv[-1]
    config = "eyJydW5uZXIiOiJjYW5hcnkifQ=="
    done = _run_runner_cmd(tmp_path, {JIT_ENV: config})
    assert done.returncode == 0, done.stderr
    # run.sh gets the config as its argument; the job's steps (its children) do not inherit it
    assert done.stdout.splitlines() == ["--jitconfig", config, "env:unset"]
    assert code_reads(JIT_ENV), "the variable the image reads is the one the code sets"


def test_runner_image_without_a_jit_config_refuses_to_start(tmp_path: Path) -> None:
    done = _run_runner_cmd(tmp_path, {})
    assert done.returncode == 64
    assert f"{JIT_ENV} is not set" in done.stderr and done.stdout == ""


def test_github_pool_example_validates_with_its_secrets_from_env() -> None:
    from scaler.github.testing import make_app_key

    example = DEPLOY / "scaler.github.toml"
    text = example.read_text()
    env = {"FLY_API_TOKEN": "fly-token", "REDIS_URL": "redis://127.0.0.1:6379/0",
           "GITHUB_APP_PRIVATE_KEY": make_app_key().private_pem.get_secret_value(),
           "GITHUB_WEBHOOK_SECRET": "webhook-secret-value"}
    settings = load_settings(example, env=env)
    (pool,) = settings.pools
    assert pool.is_github and pool.labels and (pool.repositories or pool.organizations)
    assert settings.github.uses_app and settings.github.webhook_secret is not None
    for name in ("GITHUB_APP_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET", "FLY_API_TOKEN"):
        assert name in text, f"document {name}"
        assert code_reads(name)
    assert "Dockerfile.github-runner" in text and "/v1/webhooks/github" in text
    # without the secrets it refuses, naming what is missing
    with pytest.raises(ConfigError, match="webhook_secret"):
        load_settings(example, env={k: v for k, v in env.items()
                                    if k != "GITHUB_WEBHOOK_SECRET"})
