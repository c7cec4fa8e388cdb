"""What a scenario gets: :class:`ChaosContext`.

A scenario is ``run(ctx) -> ScenarioResult``. The context gives it, all cleaned up afterwards:

- a fresh Redis namespace (``ctx.namespace``, also the dramatiq namespace) and scaler prefix
  (``ctx.prefix``), a fresh queue (``ctx.queue``) and side-effect list (``ctx.key``);
- :meth:`ChaosContext.local_api`: ``scaler local-api`` (current checkout) with faults, a seed,
  timings and rate limits, and its admin side (:class:`chaos.localapi.LocalAPI`);
- :meth:`ChaosContext.pool` / :meth:`ChaosContext.config`: a scaler config as a dict (per-job
  pools run ``python -m workers.runner`` with ``SCALER_ACTORS=chaos.actors``);
- :meth:`ChaosContext.start_scaler`: ``scaler run`` of the tree under test
  (:class:`chaos.scalerproc.ScalerProc`: kill, freeze, thaw, terminate, metrics, readyz, logs);
- :meth:`ChaosContext.enqueue`: jobs through a plain dramatiq broker or our middleware;
- :meth:`ChaosContext.private_redis`: a ``redis-server`` of its own to pause and kill;
- :meth:`ChaosContext.run_in_tree`: a module of the tree under test in a child process, for
  scenarios that run in-process code and still want ``--rev`` / ``--mutant`` to apply.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.common import BenchConfig, redis_keys
from chaos.jobs import Job, enqueue
from chaos.localapi import LocalAPI
from chaos.redisserver import PrivateRedis
from chaos.scalerproc import ScalerProc
from chaos.tree import Tree
from scaler.local.testing import free_port

__all__ = ["DEFAULT_REDIS_URL", "ChaosContext", "scenario_context"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class ChaosContext:
    """One scenario's world. Create it with :func:`scenario_context`."""

    scenario_id: str
    quick: bool
    tree: Tree
    redis_url: str
    namespace: str
    """The dramatiq namespace and the root of every Redis key of this scenario."""
    workdir: Path
    """Configs, logs and the local API's machine directories of this scenario."""
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    _redis: redis.Redis | None = field(default=None, repr=False)

    # -- names --------------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The scaler's key prefix (``[redis] prefix``)."""
        return f"{self.namespace}:fs"

    @property
    def queue(self) -> str:
        """The scenario's queue."""
        return f"{self.scenario_id.lower()}q"

    @property
    def key(self) -> str:
        """The Redis list the chaos actors push each job's side effect to."""
        return f"{self.namespace}:effects"

    def n(self, quick: int, full: int) -> int:
        """A size for this mode."""
        return quick if self.quick else full

    def seconds(self, quick: float, full: float) -> float:
        """A duration for this mode."""
        return quick if self.quick else full

    @property
    def redis(self) -> redis.Redis:
        """A client on the shared Redis (``decode_responses``)."""
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url, decode_responses=True)
            self._stack.callback(self._redis.close)
        return self._redis

    # -- pieces -------------------------------------------------------------------------------

    def local_api(
        self, *, faults: Mapping[str, Any] | None = None, seed: int = 0, timings: str = "fast",
        rate_limits: str = "fly", runtime: str = "process",
    ) -> LocalAPI:
        """Start ``scaler local-api`` (stopped with the scenario)."""
        api = LocalAPI(self.workdir, faults=faults, seed=seed, timings=timings,
                       rate_limits=rate_limits, runtime=runtime, env=os.environ)
        self._stack.callback(api.close)
        return api.start()

    def private_redis(self, *, persistent: bool = False) -> PrivateRedis:
        """Start a ``redis-server`` of this scenario's own (stopped with it); ``persistent``: it
        keeps its data across :meth:`~chaos.redisserver.PrivateRedis.kill` and restart."""
        server = PrivateRedis(self.workdir, persistent=persistent)
        self._stack.callback(server.close)
        return server.start()

    def machine_env(self, redis_url: str | None = None, queue: str | None = None) -> dict[str, str]:
        """The env of a per-job machine running the chaos actors of the tree under test."""
        return {
            "SCALER_ACTORS": "chaos.actors",
            "REDIS_URL": redis_url or self.redis_url,
            "CHAOS_EFFECTS_URL": self.redis_url,
            "CHAOS_QUEUE": queue or self.queue,
            "PYTHONPATH": self.tree.pythonpath,
        }

    def pool(
        self, app: str, *, name: str = "jobs", queue: str | None = None, max_machines: int = 5,
        redis_url: str | None = None, **overrides: Any,
    ) -> dict[str, Any]:
        """A per-job pool of the chaos actors (short timeouts suited to the suite)."""
        return {
            "name": name, "mode": "per-job", "app": app, "queues": [queue or self.queue],
            "max_machines": max_machines, "image": "local/chaos:latest",
            "cmd": ["python", "-m", "workers.runner"],
            "env": self.machine_env(redis_url, queue), "boot_timeout": "20s",
            "max_runtime": "60s", "max_launches": 3, **overrides,
        }

    def config(
        self, api: LocalAPI, pools: Sequence[Mapping[str, Any]], *,
        scaler: Mapping[str, Any] | None = None, redis_url: str | None = None,
        **sections: Any,
    ) -> dict[str, Any]:
        """A whole scaler config on ``api`` with ``pools``; ``scaler`` overrides ``[scaler]``
        keys, ``sections`` adds or replaces top-level tables (``apps=...``). A fresh HTTP port."""
        return {
            "fly": {"api_url": api.url, "timeout": "10s"},
            "redis": {"url": redis_url or self.redis_url, "namespace": self.namespace,
                      "prefix": self.prefix},
            "scaler": {"max_machines": 50, "resync_interval": "1s", "orphan_grace": "3s",
                       "claim_grace": "2s", "leader_ttl": "3s", "shared_rate_limits": True,
                       **(scaler or {})},
            "pools": [dict(p) for p in pools],
            "http": {"host": "127.0.0.1", "port": free_port()},
            **sections,
        }

    def start_scaler(
        self, config: Mapping[str, Any], api: LocalAPI, *, name: str = "a", start: bool = True,
    ) -> ScalerProc:
        """``scaler run`` of the tree under test with ``config`` (stopped with the scenario)."""
        env = {**os.environ, "FLY_API_TOKEN": api.token}
        env.pop("REDIS_URL", None)  # the config's Redis, not the suite's
        proc = ScalerProc(name, config, tree=self.tree, workdir=self.workdir, env=env)
        self._stack.callback(proc.terminate)
        return proc.start() if start else proc

    def enqueue(
        self, actor: str, args_per_job: Sequence[Sequence[Any]], *, plain: bool = True,
        queue: str | None = None, redis_url: str | None = None,
    ) -> list[Job]:
        """Enqueue jobs of a chaos actor (see :func:`chaos.jobs.enqueue`)."""
        return enqueue(redis_url or self.redis_url, self.namespace, self.prefix,
                       queue or self.queue, actor, args_per_job, plain=plain)

    def jobs(
        self, n: int, actor: str = "record", *extra: Any, plain: bool = True,
        queue: str | None = None, redis_url: str | None = None, first: int = 0,
    ) -> list[Job]:
        """``n`` jobs ``j<first>``... of ``actor(key, job, *extra)``."""
        return self.enqueue(actor, [(self.key, f"j{i}", *extra) for i in range(first, first + n)],
                            plain=plain, queue=queue, redis_url=redis_url)

    def leader_pid(self, redis_url: str | None = None) -> int | None:
        """The pid of the replica holding the leader lease (from its owner name), or None."""
        client = redis.Redis.from_url(redis_url or self.redis_url, decode_responses=True,
                                      socket_timeout=2)
        try:
            value = client.get(f"{self.prefix}:leader")
        except redis.RedisError:
            return None
        finally:
            client.close()
        if not value:
            return None
        parts = str(value).rsplit(":", 1)[0].split("-")
        return next((int(p) for p in reversed(parts[:-1]) if p.isdigit()), None)

    def run_in_tree(
        self, module: str, args: Sequence[str] = (), *, timeout: float = 300,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m module args`` with the tree under test first on the path (its working
        directory is the tree; the checkout provides ``chaos`` when the tree has none). A scenario
        that runs in-process code calls this with its own module when ``not ctx.tree.current``,
        printing ``ScenarioResult.to_json()`` as its last line."""
        return subprocess.run(
            [sys.executable, "-m", module, *args], cwd=self.tree.root, text=True,
            capture_output=True, timeout=timeout, env=self.tree.env(env),
        )

    def on_cleanup(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` when the scenario ends (last registered, first called)."""
        self._stack.callback(fn)

    def close(self) -> None:
        """Stop everything the scenario started."""
        self._stack.close()


@contextlib.contextmanager
def scenario_context(
    scenario_id: str, *, quick: bool, tree: Tree, redis_url: str | None = None,
    keep_workdir: bool = False,
) -> Iterator[ChaosContext]:
    """A :class:`ChaosContext` for one scenario; everything it started is stopped and every Redis
    key under its namespace deleted afterwards (the workdir too, unless ``keep_workdir``)."""
    url = redis_url or os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    cfg = BenchConfig(redis_url=url, key_prefix="chaos")
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{scenario_id.lower()}-"))
    with redis_keys(cfg, scenario_id) as namespace:
        ctx = ChaosContext(scenario_id, quick, tree, url, namespace, workdir)
        try:
            yield ctx
        finally:
            ctx.close()
            if not keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)


