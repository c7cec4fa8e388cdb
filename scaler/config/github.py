"""The ``[github]`` section and the checks of ``mode = "github"`` pools (GitHub Actions runners).

``[github]``: how the scaler reaches GitHub and recognises its webhooks.

- ``api_url``: ``https://api.github.com`` (default), or a GitHub Enterprise Server's
  ``https://HOST/api/v3``.
- A GitHub App (``app_id``, ``installation_id`` and its private key, from
  ``private_key_file`` or env ``GITHUB_APP_PRIVATE_KEY``), or a fine-grained token
  (``token_file`` or env ``SCALER_GITHUB_TOKEN``; not ``GITHUB_TOKEN``, which Actions sets for
  its own use). Exactly one of the two when a github pool exists.
- The webhook secret: ``webhook_secret_file`` or env ``GITHUB_WEBHOOK_SECRET``. Required by
  github pools: an unsigned webhook could launch machines.
- ``resync_interval`` (``60s``): how often the queued jobs of the allowed repositories (those
  named, and those of the allowed organizations) are listed through the API, so a job whose
  webhook was lost still gets a runner (also at start-up). Each resync spends the API budget:
  see :mod:`scaler.github.runtime`.
- ``runner_idle_timeout`` (``5m``): a runner machine started this long ago that GitHub gave no job
  is destroyed and its registration removed.
- ``max_wait`` (``2m``): the longest a GitHub call waits for a rate limit before giving up.

Literal secrets in the file are refused, as for the Fly token: config files get committed.

Pool keys (``mode = "github"``): ``labels`` (served, ``self-hosted`` implied), ``repositories``
(``owner/name``) and/or ``organizations`` (logins) allowed, ``allow_forks`` (false),
``runner_scope`` (where runners register: ``owner/name`` or an organization login; default the
pool's only repository or organization), ``runner_group_id`` (1, the default group; organization
scope only). A github pool has exactly one queue: the queue its jobs wait in as messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scaler.config.values import (
    HttpUrl,
    NonNegInt,
    PositiveDuration,
    SecretValue,
    _Found,
    _Model,
)

__all__ = [
    "GITHUB_POOL_KEYS",
    "GITHUB_SECRET_ENV",
    "GitHubSettings",
    "github_pool_problems",
    "github_section_problems",
    "read_github_secrets",
]

GITHUB_POOL_KEYS = (
    "labels", "repositories", "organizations", "allow_forks", "runner_scope", "runner_group_id",
)
"""Pool keys that apply to github pools only."""

GITHUB_SECRET_ENV = {
    "private_key": ("GITHUB_APP_PRIVATE_KEY", "private_key_file"),
    "token": ("SCALER_GITHUB_TOKEN", "token_file"),
    "webhook_secret": ("GITHUB_WEBHOOK_SECRET", "webhook_secret_file"),
}
"""Each secret of ``[github]``: the env variable that gives it (and wins), and its file key."""

_LOGIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


class GitHubSettings(_Model):
    """``[github]``: see the module docstring."""

    api_url: HttpUrl = "https://api.github.com"
    app_id: NonNegInt | None = None
    installation_id: NonNegInt | None = None
    private_key_file: Path | None = None
    private_key: SecretValue | None = None
    token_file: Path | None = None
    token: SecretValue | None = None
    webhook_secret_file: Path | None = None
    webhook_secret: SecretValue | None = None
    resync_interval: PositiveDuration = 60.0
    runner_idle_timeout: PositiveDuration = 300.0
    max_wait: PositiveDuration = 120.0

    @property
    def uses_app(self) -> bool:
        """Whether GitHub is reached as an App (else with a token)."""
        return self.app_id is not None

    def secrets(self) -> list[str]:
        """The secret strings of this section (for the log redactor)."""
        out = [s.get_secret_value() for s in (self.private_key, self.token, self.webhook_secret)
               if s is not None]
        # A PEM key is redacted line by line too: a traceback may show one line of it.
        if self.private_key is not None:
            out.extend(line for line in self.private_key.get_secret_value().splitlines()
                       if len(line) >= 16 and not line.startswith("-----"))
        return [s for s in out if s]


def _is_login(value: str) -> bool:
    return 0 < len(value) <= 39 and set(value) <= _LOGIN_CHARS


def _is_repo(value: str) -> bool:
    owner, slash, name = value.partition("/")
    return bool(slash) and _is_login(owner) and bool(name) and name not in (".", "..") and all(
        c.isalnum() or c in "._-" for c in name)


def github_pool_problems(pool: Mapping[str, Any], given: set[str]) -> _Found:
    """Checks of one pool's github keys (on raw data: tolerant of wrong types)."""
    problems: _Found = []
    if pool.get("mode") != "github":
        for key in sorted(given & set(GITHUB_POOL_KEYS)):
            problems.append(((key,), f'{key!r} applies to github pools only; remove it or set '
                                     'mode = "github"'))
        return problems
    labels = pool.get("labels")
    if not isinstance(labels, list | tuple) or not [
        x for x in labels if isinstance(x, str) and x.strip().lower() != "self-hosted"
    ]:
        problems.append((("labels",), 'a github pool serves at least one label besides '
                                      '"self-hosted", e.g. labels = ["fly", "linux"]'))
    elif any(not isinstance(x, str) or not x.strip() for x in labels):
        problems.append((("labels",), "labels must be non-empty strings"))
    repos = pool.get("repositories") or ()
    orgs = pool.get("organizations") or ()
    repos = [r for r in repos if isinstance(r, str)] if isinstance(repos, list | tuple) else []
    orgs = [o for o in orgs if isinstance(o, str)] if isinstance(orgs, list | tuple) else []
    if not repos and not orgs:
        problems.append((("repositories",), 'allow at least one repository or organization, '
                                            'e.g. repositories = ["acme/api"] or organizations '
                                            '= ["acme"]: a pool open to every repository would '
                                            "run anyone's workflow on your machines"))
    for r in repos:
        if not _is_repo(r):
            problems.append((("repositories",), f"{r!r} is not 'owner/name' (e.g. 'acme/api')"))
    for o in orgs:
        if not _is_login(o):
            problems.append((("organizations",), f"{o!r} is not an account login "
                                                 "(letters, digits and '-')"))
    scope = pool.get("runner_scope")
    if scope is None and len(repos) + len(orgs) != 1:
        problems.append((("runner_scope",), "say where this pool's runners register: "
                                            'runner_scope = "acme" (an organization) or '
                                            '"acme/api" (a repository)'))
    elif isinstance(scope, str) and not (_is_repo(scope) or _is_login(scope)):
        problems.append((("runner_scope",), f"{scope!r} is neither an organization login nor "
                                            "'owner/name'"))
    elif isinstance(scope, str) and "/" in scope and "runner_group_id" in given:
        problems.append((("runner_group_id",), "runner groups exist at organization scope "
                                               "only; remove it or set runner_scope to the "
                                               "organization"))
    for key in sorted(given & {"warm_slots", "slot_max_jobs", "slot_max_age"}):
        problems.append(((key,), f"{key!r} does not apply to github pools: a runner's JIT config "
                                 "is single-use, so a runner machine cannot be kept warm"))
    queues = pool.get("queues")
    if isinstance(queues, list | tuple) and len(queues) > 1:
        problems.append((("queues",), "a github pool has exactly one queue (where its jobs "
                                      f'wait), e.g. queues = ["{pool.get("name") or "gh"}"]'))
    return problems


def github_section_problems(data: Mapping[str, Any], pools: list[Any]) -> _Found:
    """Checks of ``[github]`` against the pools (on raw data, secrets already read in)."""
    gh = data.get("github")
    gh = gh if isinstance(gh, Mapping) else {}
    wanted = any(isinstance(p, Mapping) and p.get("mode") == "github" for p in pools)
    problems: _Found = []
    if not wanted:
        return problems
    app = gh.get("app_id") is not None
    token = gh.get("token") is not None
    if app and token:
        problems.append((("github",), "configure a GitHub App (app_id, installation_id, "
                                      "private_key_file) or a token (token_file, env "
                                      "SCALER_GITHUB_TOKEN), not both"))
    elif not app and not token:
        problems.append((("github",), "github pools need API access: a GitHub App (app_id, "
                                      "installation_id, private_key_file or env "
                                      "GITHUB_APP_PRIVATE_KEY) or a fine-grained token "
                                      "(token_file or env SCALER_GITHUB_TOKEN)"))
    if app:
        if gh.get("installation_id") is None:
            problems.append((("github", "installation_id"), "a GitHub App needs the "
                                                            "installation id (in the URL of the "
                                                            "App's installation page)"))
        if gh.get("private_key") is None:
            problems.append((("github", "private_key_file"), "a GitHub App needs its private "
                                                             "key: private_key_file = "
                                                             '"/secrets/app.pem" or env '
                                                             "GITHUB_APP_PRIVATE_KEY"))
    if gh.get("webhook_secret") is None:
        problems.append((("github", "webhook_secret_file"), "github pools need the webhook "
                                                            "secret: webhook_secret_file or env "
                                                            "GITHUB_WEBHOOK_SECRET (the same "
                                                            "value as in the webhook's settings)"))
    return problems


def read_github_secrets(
    gh: dict[str, Any], env: Mapping[str, str], read_file: Any, problems: list[str]
) -> None:
    """Move the ``[github]`` secrets from env or their files into ``gh`` (refusing literal
    values in the file); ``read_file(path, where, problems)`` reads one secret file."""
    for key, (var, file_key) in GITHUB_SECRET_ENV.items():
        if key in gh:
            del gh[key]
            problems.append(f"github.{key}: a literal secret in the config file is refused; set "
                            f'env {var} or github.{file_key} = "/path/to/file"')
        value = env.get(var) or read_file(gh.get(file_key), f"github.{file_key}", problems)
        if value:
            gh[key] = value.strip() + ("\n" if key == "private_key" else "")
    pem = gh.get("private_key")
    if isinstance(pem, str) and "PRIVATE KEY-----" not in pem:
        del gh["private_key"]
        problems.append("github.private_key_file: does not hold a PEM private key (-----BEGIN "
                        "... PRIVATE KEY-----); download one from the App's settings page")
