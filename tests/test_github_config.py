"""Configuration of GitHub runner pools and of [github]: every problem named with its key and fix,
secrets from env or files only, never shown (describe, redacted, logs), refused in a pool's env."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from scaler.cli import main
from scaler.config import ConfigError, parse_settings
from scaler.secret import MASK
from scaler.telemetry.logging import configure_logging

WEBHOOK = "whsec-config-canary-1f2e3d4c"
TOKEN = "ghtok-config-canary-9a8b7c6d"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAcanarycanarycanarycanarycanary\n"
       "-----END RSA PRIVATE KEY-----\n")
ENV = {"SCALER_GITHUB_TOKEN": TOKEN, "GITHUB_WEBHOOK_SECRET": WEBHOOK}


def pool(**kw: Any) -> dict[str, Any]:
    return {"name": "gh", "mode": "github", "app": "ci", "queues": ["gh"], "image": "runner",
            "labels": ["fly"], "repositories": ["acme/api"], **kw}


def problems(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_settings(data, ENV if env is None else env)
    return exc.value.problems


def test_a_complete_github_pool_is_understood() -> None:
    s = parse_settings({"pools": [pool(organizations=["acme"], runner_scope="acme",
                                       runner_group_id=3, allow_forks=True)]}, ENV)
    p = s.pools[0]
    assert p.is_github and not p.is_worker
    assert p.scope == "acme" and p.runner_group_id == 3 and p.allow_forks
    assert s.github.token is not None and s.github.webhook_secret is not None
    text = s.describe()
    assert "github:" in text and "labels=fly" in text and "runner_scope=acme" in text


def test_a_runner_pool_outlasts_a_long_build_unless_told_otherwise() -> None:
    def runtime(**kw: Any) -> float:
        return parse_settings({"pools": [pool(**kw)]}, ENV).pools[0].max_runtime

    assert runtime() == 6 * 3600 + 15 * 60  # GitHub's default job timeout, plus boot
    assert runtime(max_runtime="40m") == 2400
    plain = {"name": "p", "app": "a", "queues": ["q"], "image": "i"}
    assert parse_settings({"pools": [plain]}, {}).pools[0].max_runtime == 900


@pytest.mark.parametrize(("spec", "where", "words"), [
    (pool(labels=[]), "pools[0].labels", "at least one label"),
    (pool(labels=["self-hosted"]), "pools[0].labels", "besides"),
    (pool(repositories=[]), "pools[0].repositories", "at least one repository or organization"),
    (pool(repositories=["acme"]), "pools[0].repositories", "'owner/name'"),
    (pool(organizations=["ac me"]), "pools[0].organizations", "account login"),
    (pool(repositories=["acme/api", "acme/web"]), "pools[0].runner_scope", "say where"),
    (pool(runner_scope="acme/api", runner_group_id=2), "pools[0].runner_group_id",
     "organization scope only"),
    (pool(queues=["a", "b"]), "pools[0].queues", "exactly one queue"),
    (pool(min_machines=1), "pools[0].min_machines", "worker pools only"),
    (pool(warm_slots=2), "pools[0].warm_slots", "single-use"),
    ({**pool(), "mode": "per-job"}, "pools[0].labels", 'set mode = "github"'),
])
def test_a_bad_github_pool_names_the_key_and_the_fix(spec: dict[str, Any], where: str,
                                                     words: str) -> None:
    found = problems({"pools": [spec]})
    assert any(p.startswith(where) and words in p for p in found), found


def test_github_pools_need_api_access_and_the_webhook_secret() -> None:
    found = problems({"pools": [pool()]}, env={})
    assert any(p.startswith("github:") and "SCALER_GITHUB_TOKEN" in p for p in found)
    assert any(p.startswith("github.webhook_secret_file") for p in found)


def test_an_app_needs_its_installation_and_key_and_not_a_token_too() -> None:
    found = problems({"github": {"app_id": 5}, "pools": [pool()]},
                     env={"GITHUB_WEBHOOK_SECRET": WEBHOOK})
    assert any(p.startswith("github.installation_id") for p in found)
    assert any(p.startswith("github.private_key_file") for p in found)
    both = problems({"github": {"app_id": 5, "installation_id": 6}, "pools": [pool()]},
                    env={**ENV, "GITHUB_APP_PRIVATE_KEY": PEM})
    assert any("not both" in p for p in both)


def test_a_key_file_without_a_pem_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text("not a key")
    found = problems({"github": {"app_id": 5, "installation_id": 6,
                                 "private_key_file": str(key)}, "pools": [pool()]},
                     env={"GITHUB_WEBHOOK_SECRET": WEBHOOK})
    assert any(p.startswith("github.private_key_file") and "PEM" in p for p in found)
    assert not any("not a key" in p for p in found)


def test_secrets_come_from_files_and_literal_ones_are_refused(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text(WEBHOOK + "\n")
    (tmp_path / "key").write_text(PEM)
    s = parse_settings({"github": {"app_id": 5, "installation_id": 6,
                                   "private_key_file": str(tmp_path / "key"),
                                   "webhook_secret_file": str(tmp_path / "hook")},
                        "pools": [pool()]}, {})
    assert s.github.uses_app
    assert s.github.webhook_secret is not None
    assert s.github.webhook_secret.get_secret_value() == WEBHOOK
    found = problems({"github": {"webhook_secret": WEBHOOK, "token": TOKEN}, "pools": [pool()]})
    assert any(p.startswith("github.webhook_secret:") and "refused" in p for p in found)
    assert any(p.startswith("github.token:") and "refused" in p for p in found)
    assert not any(WEBHOOK in p or TOKEN in p for p in found)
    missing = problems({"github": {"token_file": str(tmp_path / "nope")}, "pools": [pool()]},
                       env={"GITHUB_WEBHOOK_SECRET": WEBHOOK})
    assert any(p.startswith("github.token_file: cannot read") for p in missing)


def test_a_github_secret_in_a_pools_env_is_refused() -> None:
    found = problems({"pools": [pool(env={"HOOK": f"x{WEBHOOK}"})]})
    assert any(p.startswith("pools[0].env.HOOK") and "GitHub secret" in p for p in found)
    assert not any(WEBHOOK in p for p in found)


def test_github_secrets_are_masked_in_describe_redacted_and_logs() -> None:
    s = parse_settings({"github": {"app_id": 5, "installation_id": 6}, "pools": [pool()]},
                       {"GITHUB_APP_PRIVATE_KEY": PEM, "GITHUB_WEBHOOK_SECRET": WEBHOOK})
    dumped = json.dumps(s.redacted()) + s.describe() + repr(s)
    assert WEBHOOK not in dumped and "MIIEowIBAAKCAQEAcanary" not in dumped
    assert s.redacted()["github"]["webhook_secret"] == MASK
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    # a traceback may show one line of the key: each line is masked on its own too
    structlog.get_logger().info("leak", hook=WEBHOOK,
                                line="MIIEowIBAAKCAQEAcanarycanarycanarycanarycanary")
    text = out.getvalue()
    assert WEBHOOK not in text and "MIIEowIBAAKCAQEAcanary" not in text


def test_check_config_reports_github_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "scaler.toml"
    cfg.write_text('[[pools]]\nname = "gh"\nmode = "github"\napp = "ci"\nqueues = ["gh"]\n'
                   'image = "runner"\nlabels = ["fly"]\n')
    for var in ("SCALER_GITHUB_TOKEN", "GITHUB_WEBHOOK_SECRET", "GITHUB_APP_PRIVATE_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr()
    text = err.out + err.err
    assert "pools[0].repositories" in text and "github.webhook_secret_file" in text


def test_every_github_key_is_in_the_configuration_reference() -> None:
    from scaler.config.github import GITHUB_POOL_KEYS, GitHubSettings

    doc = (Path(__file__).parents[1] / "docs/configuration.md").read_text()
    hidden = {"private_key", "token", "webhook_secret"}  # from env or the *_file keys only
    for key in set(GitHubSettings.model_fields) - hidden:
        assert f"`[github] {key}" in doc or f", `{key}`" in doc, key
    for key in GITHUB_POOL_KEYS:
        assert f"`{key}`" in doc, key
