"""``scaler init [DIR]``: scaffold a working set-up in a folder.

Writes ``scaler.toml`` (one per-job pool and one worker pool, commented), ``tasks.py`` (an actors
module with one actor per pool) and prints the next commands: create the Fly app, set the
secrets, deploy the image, check the config, run. Existing files are never overwritten unless
``--force``. With ``--create-apps`` it creates the Fly app through the Machines API (the local
one, ``FLY_API_URL``, or Fly's), which is how ``scaler local-api`` users get a working app in one
step.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

__all__ = ["add_arguments", "render_config", "render_tasks", "run"]

_APP = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

_CONFIG = '''\
# fly-scaler configuration, made by `scaler init`. Check it with:
#   scaler check-config -c {config}
# Durations: "500ms", "30s", "15m", "2h". Secrets never go in this file: FLY_API_TOKEN (or
# fly.token_file), REDIS_URL (may hold a password) and SCALER_ENQUEUE_TOKENS come from the
# environment.

[fly]
api_url = "{api_url}"   # env FLY_API_URL overrides
org_slug = "{org}"

[redis]
url = "redis://127.0.0.1:6379/0"   # env REDIS_URL overrides; the same Redis as your app
namespace = "dramatiq"             # your app's dramatiq RedisBroker namespace

[scaler]
max_machines = 20                  # the global cap, all pools together

[http]
port = 9090                        # /metrics, /healthz, /readyz and the enqueue API

# One dedicated machine per message of queue "reports": a heavy or untrusted job gets its own
# machine, which is destroyed when the job ends.
[[pools]]
name = "reports"
mode = "per-job"
app = "{app}"
queues = ["reports"]
max_machines = 10
image = "{image}"
cmd = ["python", "-m", "workers.runner"]
# The runner reaches Redis through REDIS_URL: set it as a Fly secret of the app
# (fly secrets set REDIS_URL=... -a {app}) or here if it holds no password.
env = {{ SCALER_ACTORS = "tasks" }}
size = "shared-cpu-1x"
max_runtime = "15m"          # a job running longer is stopped and given back
max_launches = 3             # launches of one job before it is dead-lettered

# Ordinary dramatiq workers for queue "emails", scaled with its depth, down to zero.
[[pools]]
name = "emails"
mode = "worker"
app = "{app}"
queues = ["emails"]
max_machines = 5
image = "{image}"
cmd = ["python", "-m", "workers.runner", "--drain"]
env = {{ SCALER_ACTORS = "tasks" }}
size = "shared-cpu-1x"
min_machines = 0
jobs_per_machine = 4         # messages one machine works on at once
idle_timeout = "60s"         # an idle machine stops after this
'''

_TASKS = '''\
"""Actors of this app, made by `scaler init`. The app enqueues them (``report.send(42)``); the
scaler's machines run them (their env names this module in ``SCALER_ACTORS``)."""

import dramatiq

from workers.enqueue import redis_broker_from_env

# A RedisBroker from REDIS_URL, with the scaler's middleware: it stamps enqueue times and wakes
# the scaler as soon as a message is sent.
dramatiq.set_broker(redis_broker_from_env())


@dramatiq.actor(queue_name="reports", max_retries=0)
def report(account_id: int) -> None:
    """Runs on a machine of its own (pool "reports")."""
    print(f"building the report of account {account_id}")


@dramatiq.actor(queue_name="emails")
def send_email(address: str) -> None:
    """Runs on the worker pool "emails"."""
    print(f"sending an email to {address}")
'''


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scaler init``."""
    parser.add_argument("dir", nargs="?", default=".", type=Path,
                        help="folder to write scaler.toml and tasks.py into (default: here)")
    parser.add_argument("--app", default="my-jobs",
                        help="the Fly app the machines run in (default: my-jobs)")
    parser.add_argument("--image", default=None,
                        help="the image the machines run (default: registry.fly.io/APP:latest)")
    parser.add_argument("--org", default="personal", help="Fly organization slug")
    parser.add_argument("--api-url", default=None,
                        help="Machines API (default: env FLY_API_URL, else Fly's)")
    parser.add_argument("--create-apps", action="store_true",
                        help="create the app through the Machines API now (needs FLY_API_TOKEN)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def render_config(app: str, image: str, org: str, api_url: str, config: str) -> str:
    """The ``scaler.toml`` text."""
    return _CONFIG.format(app=app, image=image, org=org, api_url=api_url, config=config)


def render_tasks() -> str:
    """The ``tasks.py`` text."""
    return _TASKS


def run(args: argparse.Namespace) -> int:
    """Write the files and print the next steps; 2 on a bad argument or a file in the way."""
    app: str = args.app
    if not _APP.match(app):
        print(f"scaler init: --app {app!r}: use lowercase letters, digits and dashes "
              "(a Fly app name)", file=sys.stderr)
        return 2
    api_url = args.api_url or os.environ.get("FLY_API_URL") or "https://api.machines.dev"
    image = args.image or f"registry.fly.io/{app}:latest"
    folder: Path = args.dir
    config, tasks = folder / "scaler.toml", folder / "tasks.py"
    in_the_way = [str(p) for p in (config, tasks) if p.exists()]
    if in_the_way and not args.force:
        print(f"scaler init: {', '.join(in_the_way)} already exist(s); nothing written "
              "(--force overwrites)", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(render_config(app, image, args.org, api_url, str(config)))
    tasks.write_text(render_tasks())
    print(f"wrote {config} and {tasks}")
    if args.create_apps:
        problem = _create_app(api_url, app, args.org)
        if problem is not None:
            print(f"scaler init: {problem}", file=sys.stderr)
            return 1
    print(_next_steps(app, str(config), created=args.create_apps))
    return 0


def _create_app(api_url: str, app: str, org: str) -> str | None:
    """Create ``app`` (an app that already exists is fine); a problem line, or None."""
    from scaler.fly import errors as fe
    from scaler.fly.client import FlyClient

    if not os.environ.get("FLY_API_TOKEN"):
        return "--create-apps needs FLY_API_TOKEN (for scaler local-api: the token it printed)"
    try:
        with FlyClient(base_url=api_url) as fly:
            try:
                fly.create_app(app, org)
                print(f"created app {app} in org {org} on {api_url}")
            except (fe.Conflict, fe.NameTaken):
                print(f"app {app} already exists on {api_url}")
    except fe.FlyError as exc:
        return f"could not create app {app} on {api_url}: {exc}"
    return None


def _next_steps(app: str, config: str, *, created: bool) -> str:
    steps = [] if created else [f"fly apps create {app}"]
    steps += [
        "export FLY_API_TOKEN=$(fly tokens create deploy -a " + app + ")",
        f"fly secrets set REDIS_URL=redis://... -a {app}   # the runner's way to Redis",
        f"fly deploy --build-only --push --image-label latest -a {app}   "
        "# an image with your code, dramatiq and fly-scaler",
        f"scaler check-config -c {config}",
        f"scaler run -c {config}",
    ]
    return "next:\n" + "\n".join(f"  {s}" for s in steps)
