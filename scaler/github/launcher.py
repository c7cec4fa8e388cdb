"""A runner machine's registration: the just-in-time config at launch, and its removal.

At launch (:meth:`RunnerLauncher.prepare`) the scaler asks GitHub for a JIT runner config named
after the machine (deterministic: ``{pool}-{job}-{launch}``), with the pool's labels and runner
group, and puts it in that machine's env as ``GITHUB_RUNNER_JITCONFIG``: the runner image runs
``run.sh --jitconfig "$GITHUB_RUNNER_JITCONFIG"``, takes one job and exits. Nothing else secret
goes there: the create request's env is the pool's own (checked at start-up to hold no secret of
the scaler) plus this one variable, and the per-job binding (``FLY_SCALER_*``: queue and message
ids, not secrets) is left out, since no dramatiq runner runs in a runner machine. The metadata
stays the per-job metadata (names and ids).

A 409 means the name is registered already: an earlier launch of this claim registered it and
then the scaler stopped or the create failed. The old registration is removed (found by name)
and a new config generated, since the old config cannot be read back.

:meth:`RunnerLauncher.deregister` removes a runner's registration (a machine destroyed while its
runner was idle or never came online); an ephemeral runner that ran its job removed itself, and
GitHub answers 404, which is fine.
"""

from __future__ import annotations

import structlog

from scaler.config import PoolSpec
from scaler.fly.models import CreateMachineRequest
from scaler.github.client import GitHubClient
from scaler.github.errors import GitHubAPIError
from scaler.github.ledger import Ledger
from scaler.github.models import JitConfig, Scope
from scaler.github.routing import RunnerPoolRule
from scaler.telemetry.metrics import Metrics

__all__ = ["JITCONFIG_ENV", "RunnerLauncher"]

JITCONFIG_ENV = "GITHUB_RUNNER_JITCONFIG"
"""The env variable of a runner machine that holds its JIT config (and its only secret)."""

log = structlog.get_logger(__name__)


def _labels(pool: PoolSpec) -> tuple[str, ...]:
    return RunnerPoolRule(pool.name, pool.labels, pool.repositories, pool.organizations,
                          pool.allow_forks).runner_labels()


class RunnerLauncher:
    """Registers runners for machines about to be created, and removes registrations."""

    def __init__(self, client: GitHubClient, ledger: Ledger, metrics: Metrics) -> None:
        self._client = client
        self.ledger = ledger
        self._metrics = metrics

    async def prepare(self, pool: PoolSpec, request: CreateMachineRequest) -> CreateMachineRequest:
        """``request`` for a runner machine: its env is the pool's plus the JIT config. Raises
        the client's errors (:class:`~scaler.github.errors.GitHubError`) when GitHub refuses."""
        assert request.name is not None and request.config is not None
        name = request.name
        try:
            jit = await self._register(pool, name)
        except Exception:
            self._metrics.github_runners_launched.labels(pool.name, "failed").inc()
            raise
        self._metrics.github_runners_launched.labels(pool.name, "registered").inc()
        await self.ledger.record_runner(name, pool.name, jit.runner_id, pool.scope)
        env = {**pool.env, JITCONFIG_ENV: jit.encoded_jit_config.get_secret_value()}
        return request.model_copy(update={
            "config": request.config.model_copy(update={"env": env}),
            # The app's Fly secrets are not injected either: a workflow is untrusted code.
            "skip_secrets": True,
        })

    async def _register(self, pool: PoolSpec, name: str) -> JitConfig:
        scope, labels = Scope.parse(pool.scope), _labels(pool)
        group = pool.runner_group_id if scope.kind == "org" else 1
        try:
            return await self._client.generate_jitconfig(scope, name, labels, group)
        except GitHubAPIError as exc:
            if exc.status_code != 409:
                raise
        # Registered by an earlier launch under this name: remove it, register anew.
        for runner in await self._client.list_runners(scope):
            if runner.name == name:
                await self._client.remove_runner(scope, runner.runner_id)
                log.info("github runner re-registered", pool=pool.name, runner=name)
        return await self._client.generate_jitconfig(scope, name, labels, group)

    async def deregister(self, machine_name: str) -> bool:
        """Remove the registration of ``machine_name``'s runner, if it is one of ours. ``True``
        when GitHub still had it."""
        info = (await self.ledger.runners([machine_name])).get(machine_name)
        if info is None or info.runner_id is None:
            return False
        scope = Scope.parse(info.scope)
        try:
            removed = await self._client.remove_runner(scope, info.runner_id)
        except GitHubAPIError as exc:
            if exc.status_code == 422:  # busy: it runs a job, and removes itself after it
                return False
            raise
        await self.ledger.forget_runner(machine_name)
        return removed
