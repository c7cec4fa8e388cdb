"""Our machines on Fly: the metadata that marks them, the configs we create, and how a listed
machine becomes the planner's :class:`~scaler.policy.types.MachineView`.

Metadata (``config.metadata``, queryable with ``?metadata.KEY=value``):

- ``fly_scaler``: the scaler id (``[scaler] id``). The list call filters on it and the view
  builder checks it again: a machine without it is never seen, so never touched.
- ``fly_scaler_pool``: the pool; ``fly_scaler_job`` (dramatiq redis_message_id),
  ``fly_scaler_message`` (dramatiq message_id), ``fly_scaler_queue``, ``fly_scaler_launch``: the
  per-job binding; ``fly_scaler_size``: the size label for cost accounting; ``fly_scaler_slot``:
  on a warm slot (a per-job machine created ahead, bound to jobs in Redis), the fingerprint of
  the pool template it was made from (:func:`slot_template`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import datetime

from scaler.config import PoolSpec, Settings
from scaler.fly.models import (
    CreateMachineRequest,
    FlyMachineConfig,
    Guest,
    Machine,
    MachineInit,
    Restart,
    StopConfig,
)
from scaler.jobs.claim_record import slot_env
from scaler.jobs.claims import binding_env
from scaler.policy.types import Caps, ClaimView, MachineOptions, MachineView, PoolPolicy
from scaler.telemetry.costs import size_label

__all__ = [
    "META_JOB",
    "META_LAUNCH",
    "META_MESSAGE",
    "META_POOL",
    "META_QUEUE",
    "META_SCALER",
    "META_SIZE",
    "META_SLOT",
    "caps_of",
    "epoch",
    "job_guest",
    "machine_view",
    "per_job_request",
    "pool_of",
    "pool_policy",
    "slot_request",
    "slot_template",
    "worker_request",
]

META_SCALER = "fly_scaler"
META_POOL = "fly_scaler_pool"
META_JOB = "fly_scaler_job"
META_MESSAGE = "fly_scaler_message"
META_QUEUE = "fly_scaler_queue"
META_LAUNCH = "fly_scaler_launch"
META_SIZE = "fly_scaler_size"
META_SLOT = "fly_scaler_slot"


def caps_of(settings: Settings) -> Caps:
    """The caps of ``settings``: global, each app any pool runs machines in, and the budgets."""
    apps = {a for p in settings.pools for a in p.fly_apps}
    return Caps(
        global_max=settings.scaler.max_machines,
        per_app={a: cap for a in apps if (cap := settings.app_cap(a)) is not None},
        budgets=settings.budgets,
    )


def pool_policy(pool: PoolSpec, settings: Settings) -> PoolPolicy:
    """The planner's view of a configured pool."""
    return PoolPolicy(
        name=pool.name,
        # A github pool is per-job to the planner: one runner machine per queued job.
        mode="worker" if pool.is_worker else "per-job",
        runner_idle_timeout_s=settings.github.runner_idle_timeout if pool.is_github else None,
        app=pool.app,
        apps=pool.apps,
        queues=tuple(pool.queues),
        max_machines=pool.max_machines,
        region=pool.region,
        boot_timeout_s=pool.boot_timeout,
        max_runtime_s=pool.max_runtime,
        max_launches=pool.max_launches,
        orphan_grace_s=settings.scaler.orphan_grace,
        claim_grace_s=settings.scaler.claim_grace,
        min_machines=pool.min_machines,
        jobs_per_machine=pool.jobs_per_machine,
        warm_machines=pool.warm_machines,
        warm_suspended=pool.warm_suspended,
        scale_on=pool.scale_on,
        target_latency_s=pool.target_latency,
        target_per_machine=pool.target_per_machine or 1.0,
        idle_timeout_s=pool.idle_timeout,
        scale_tolerance=pool.scale_tolerance,
        min_lifetime_s=pool.min_lifetime,
        warm_slots=pool.warm_slots,
        slot_max_jobs=pool.slot_max_jobs,
        slot_max_age_s=pool.slot_max_age,
        slot_template=slot_template(pool, settings),
    )


def job_guest(pool: PoolSpec, options: MachineOptions | None) -> Guest:
    """The size of a job's machine: the job's own when its (validated) options name one, else the
    pool's (a job that only picks a region keeps the pool's size)."""
    if options is None or options.cpus is None:
        return pool.guest
    return Guest(cpu_kind=options.cpu_kind, cpus=options.cpus, memory_mb=options.memory_mb)


def _label(guest: Guest) -> str:
    return size_label(guest.cpu_kind or "shared", guest.cpus or 1)


def _config(
    pool: PoolSpec, settings: Settings, guest: Guest, env: dict[str, str],
    metadata: dict[str, str], *, auto_destroy: bool,
) -> FlyMachineConfig:
    init = None
    if pool.cmd or pool.entrypoint:
        init = MachineInit(
            cmd=list(pool.cmd) if pool.cmd else None,
            entrypoint=list(pool.entrypoint) if pool.entrypoint else None,
        )
    meta = dict(pool.metadata)
    meta.update(metadata)
    meta.update({META_SCALER: settings.scaler.id, META_POOL: pool.name, META_SIZE: _label(guest)})
    return FlyMachineConfig(
        image=pool.image,
        env={**pool.env, **env},
        guest=guest,
        init=init,
        restart=Restart(policy="no"),
        auto_destroy=auto_destroy,
        metadata=meta,
        stop_config=StopConfig(signal=pool.stop_signal, timeout=f"{int(pool.kill_timeout)}s"),
    )


def per_job_request(pool: PoolSpec, settings: Settings, claim: ClaimView) -> CreateMachineRequest:
    """The create request of a claim's machine: deterministic name, bound by env and metadata,
    ``auto_destroy`` with restart policy ``no`` (it runs its one job and disappears), the job's own
    size and region where its options give them, else the pool's."""
    env = binding_env(claim.queue, claim.job, claim.launch, namespace=settings.redis.namespace,
                      prefix=settings.redis.prefix)
    meta = {
        META_JOB: claim.job,
        META_MESSAGE: claim.message_id,
        META_QUEUE: claim.queue,
        META_LAUNCH: str(claim.launch),
    }
    options = claim.machine_options
    guest = job_guest(pool, options)
    return CreateMachineRequest(
        name=claim.machine_name,
        region=(options.region if options else None) or pool.region,
        config=_config(pool, settings, guest, env, meta, auto_destroy=True),
    )


def _slot_env(settings: Settings) -> dict[str, str]:
    return slot_env(namespace=settings.redis.namespace, prefix=settings.redis.prefix)


def slot_template(pool: PoolSpec, settings: Settings) -> str:
    """The fingerprint of what a slot of ``pool`` runs (image, size, env, command, stop config,
    metadata, region): a slot made from another fingerprint never takes a new job."""
    config = _config(pool, settings, pool.guest, _slot_env(settings), {}, auto_destroy=False)
    text = json.dumps([pool.region, config.model_dump(mode="json", exclude_none=True)],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def slot_request(pool: PoolSpec, settings: Settings) -> CreateMachineRequest:
    """The create request of a warm slot: the pool's template and size, no job in its env but
    ``FLY_SCALER_SLOT=1`` (the runner finds its job by ``FLY_MACHINE_ID``), not ``auto_destroy``
    (it stops between jobs), restart policy ``no``. It boots once as it is created (the runner
    finds no job and exits), so it waits ``stopped`` with its first, slowest boot behind it."""
    return CreateMachineRequest(
        name=f"{pool.name}-s-{uuid.uuid4().hex[:12]}",
        region=pool.region,
        config=_config(pool, settings, pool.guest, _slot_env(settings),
                       {META_SLOT: slot_template(pool, settings)}, auto_destroy=False),
    )


def worker_request(pool: PoolSpec, settings: Settings) -> CreateMachineRequest:
    """The create request of a worker-pool machine: a dramatiq worker that drains its queues and
    exits when idle. Kept (stopped) as a warm machine when the pool wants warm machines."""
    env = {
        "FLY_SCALER_MODE": "drain",
        "FLY_SCALER_QUEUES": ",".join(pool.queues),
        "FLY_SCALER_THREADS": str(pool.jobs_per_machine),
        "FLY_SCALER_IDLE_TIMEOUT": str(pool.idle_timeout),
        "FLY_SCALER_MIN_LIFETIME": str(pool.min_lifetime),
        "FLY_SCALER_NAMESPACE": settings.redis.namespace,
        "FLY_SCALER_PREFIX": settings.redis.prefix,
    }
    if pool.warm_suspended:
        env["FLY_SCALER_SUSPEND_IDLE"] = "1"
    return CreateMachineRequest(
        name=f"{pool.name}-w-{uuid.uuid4().hex[:12]}",
        region=pool.region,
        config=_config(
            pool, settings, pool.guest, env, {}, auto_destroy=pool.warm_machines == 0
        ),
    )


def epoch(text: object) -> float:
    """Fly's RFC 3339 timestamp as epoch seconds (0.0 when missing or not one)."""
    if not isinstance(text, str) or not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def pool_of(pool: str | None, app: str, pools: Mapping[str, PoolSpec]) -> str | None:
    """The pool a machine listed in ``app`` belongs to: the one its metadata names, if that pool
    still exists and runs machines in ``app`` (any of its ``fly_apps``)."""
    return pool if pool is not None and pool in pools and app in pools[pool].fly_apps else None


def _started_at(machine: Machine) -> float | None:
    """When the machine last reached ``started``: from its events when listed with them, else
    its ``updated_at`` while it is started."""
    for event in machine.events or ():
        if event.status == "started" and event.timestamp:
            return float(event.timestamp) / 1000.0
    if machine.state == "started":
        return epoch(machine.updated_at) or None
    return None


def machine_view(
    machine: Machine, app: str, scaler_id: str, pools: Mapping[str, PoolSpec]
) -> MachineView | None:
    """The planner's view of one listed machine, or ``None`` when it is not ours."""
    meta = machine.metadata
    if meta.get(META_SCALER) != scaler_id or not machine.id:
        return None
    pool = meta.get(META_POOL)
    launch = meta.get(META_LAUNCH)
    return MachineView(
        id=machine.id,
        name=machine.name or "",
        app=app,
        pool=pool_of(pool, app, pools),
        state=machine.state or "unknown",
        region=machine.region or "",
        created_at=epoch(machine.created_at),
        updated_at=epoch(machine.updated_at),
        started_at=_started_at(machine),
        job=meta.get(META_JOB),
        queue=meta.get(META_QUEUE),
        message_id=meta.get(META_MESSAGE),
        launch=int(launch) if launch and launch.isdigit() else None,
        size=meta.get(META_SIZE, ""),
        memory_mb=(machine.config.guest.memory_mb or 0)
        if machine.config and machine.config.guest else 0,
        slot=meta.get(META_SLOT),
        instance_id=machine.instance_id,
    )
