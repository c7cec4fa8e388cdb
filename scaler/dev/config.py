"""The example configuration ``scaler dev`` runs: a per-job pool and a scale-to-zero worker pool,
both running ``python -m workers.runner`` with the actors of :mod:`scaler.dev.example_app`.

Every Redis key of a dev run lives under ``{namespace}:`` (dramatiq's queues, the scaler's prefix
``{namespace}:scaler`` and the example app's results), so a shared Redis is never touched outside
it and :func:`run_keys_pattern` finds everything to delete at exit.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaler.config import Settings, parse_settings

__all__ = [
    "ACTORS_MODULE",
    "JOBS_APP",
    "JOBS_POOL",
    "JOBS_QUEUE",
    "WORKERS_APP",
    "WORKERS_POOL",
    "WORKERS_QUEUE",
    "DevIds",
    "dev_settings",
    "run_keys_pattern",
]

ACTORS_MODULE = "scaler.dev.example_app"
JOBS_POOL, JOBS_QUEUE, JOBS_APP = "jobs", "jobs", "example-jobs"
WORKERS_POOL, WORKERS_QUEUE, WORKERS_APP = "workers", "default", "example-workers"
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DevIds:
    """The names of one dev run: the dramatiq ``namespace`` and the scaler ``prefix`` under it."""

    namespace: str

    @classmethod
    def new(cls, namespace: str | None = None) -> DevIds:
        """``dev-<8 hex>`` unless a namespace is given (validated)."""
        name = namespace or f"dev-{uuid.uuid4().hex[:8]}"
        if not _NAMESPACE.fullmatch(name):
            raise ValueError(
                f"--namespace {name!r} is not usable: use 1-63 of [A-Za-z0-9_.-], starting with "
                "a letter or digit"
            )
        return cls(name)

    @property
    def prefix(self) -> str:
        """The scaler's key prefix (also the example app's, via ``FLY_SCALER_PREFIX``)."""
        return f"{self.namespace}:scaler"


def run_keys_pattern(ids: DevIds) -> str:
    """A SCAN pattern matching every key of the run, and nothing else (a namespace never holds
    glob characters: :meth:`DevIds.new` refuses them)."""
    return f"{ids.namespace}:*"


def _machine_env(redis_url: str) -> dict[str, str]:
    # The machines run this interpreter (the local runtime maps "python" to it); the source root
    # on PYTHONPATH lets `python -m scaler.cli dev` work from a checkout that is not installed.
    path = os.pathsep.join(p for p in (str(_SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"SCALER_ACTORS": ACTORS_MODULE, "REDIS_URL": redis_url, "PYTHONPATH": path}


def dev_settings(
    *,
    api_url: str,
    token: str,
    redis_url: str,
    ids: DevIds,
    jobs_max_machines: int = 4,
    workers_max_machines: int = 3,
) -> Settings:
    """The dev run's validated settings: pool ``jobs`` (per-job, queue ``jobs``) and pool
    ``workers`` (worker, queue ``default``, scale to zero, 2 jobs per machine, idle 3 s, one
    warm machine)."""
    env = _machine_env(redis_url)
    common: dict[str, Any] = {
        "image": "local/scaler-dev-example:latest",
        "env": env,
        "boot_timeout": "30s",
        "max_runtime": "2m",
        "kill_timeout": "5s",
    }
    pools = [
        {
            "name": JOBS_POOL, "mode": "per-job", "app": JOBS_APP, "queues": [JOBS_QUEUE],
            "max_machines": jobs_max_machines, "max_launches": 3,
            "cmd": ["python", "-m", "workers.runner"], **common,
        },
        {
            "name": WORKERS_POOL, "mode": "worker", "app": WORKERS_APP,
            "queues": [WORKERS_QUEUE], "max_machines": workers_max_machines,
            "min_machines": 0, "jobs_per_machine": 2, "idle_timeout": "3s", "min_lifetime": "0s",
            "warm_machines": 1, "scale_on": "depth",
            "cmd": ["python", "-m", "workers.runner", "--drain"], **common,
        },
    ]
    data = {
        "fly": {"api_url": api_url},
        "redis": {"url": redis_url, "namespace": ids.namespace, "prefix": ids.prefix},
        "scaler": {
            "id": ids.namespace,
            "max_machines": jobs_max_machines + workers_max_machines,
            "resync_interval": "1s",
            "orphan_grace": "5s",
        },
        "http": {"host": "127.0.0.1"},
        "pools": pools,
    }
    return parse_settings(data, env={"FLY_API_TOKEN": token})
