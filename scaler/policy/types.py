"""The planner's vocabulary: what it is told (pools, caps, an observation) and what it answers
(defined in :mod:`scaler.policy.actions`, re-exported here).

Everything here is a frozen, slotted dataclass holding tuples and read-only mappings, so a plan can
be compared, logged and replayed. Times are seconds since the epoch (floats); durations are seconds.
The reconciler fills an :class:`Observation` from Redis and Fly and executes the :class:`Plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from scaler.policy.actions import (
    Action,
    AwaitExit,
    ClaimAction,
    Create,
    DeadLetter,
    Decision,
    Destroy,
    GiveBack,
    Launch,
    MarkOrphan,
    Outcome,
    Plan,
    Relaunch,
    RequeueOrDeadLetter,
    SlotCreate,
    SlotLaunch,
    Start,
    Suspend,
    Withdraw,
)
from scaler.policy.budget import Budgets, Spend

__all__ = [
    "DEFAULT_ORPHAN_GRACE_S",
    "Action",
    "AwaitExit",
    "Caps",
    "ClaimAction",
    "ClaimView",
    "Create",
    "DeadLetter",
    "Decision",
    "Destroy",
    "GiveBack",
    "Launch",
    "MachineOptions",
    "MachineView",
    "MarkOrphan",
    "Observation",
    "Outcome",
    "Plan",
    "PoolMode",
    "PoolPolicy",
    "QueueView",
    "Relaunch",
    "RequeueOrDeadLetter",
    "RunnerView",
    "ScaleOn",
    "SlotCreate",
    "SlotLaunch",
    "Start",
    "Suspend",
    "Withdraw",
]

PoolMode = Literal["per-job", "worker"]
ScaleOn = Literal["depth", "latency", "prometheus"]

DEFAULT_ORPHAN_GRACE_S = 300.0
"""Grace before destroying a machine whose pool is unknown and whose app has no configured pool."""

_MODES = ("per-job", "worker")
_SCALE_ON = ("depth", "latency", "prometheus")


def _empty() -> Mapping[str, int]:
    return {}


# --------------------------------------------------------------------------------------------------
# Inputs: configuration


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """What the planner needs to know about one pool (a subset of the configured pool).

    Attributes:
        name: unique pool name; machines carry it in their metadata.
        mode: ``"per-job"`` (one auto-destroying machine per message) or ``"worker"``
            (a fleet of dramatiq workers scaled from a signal).
        app: the Fly app the pool's machines live in (the first of ``apps`` when that is set).
        apps: per-job: several Fly apps the pool creates in, spreading creates over their create
            budgets; empty: ``app`` alone. Caps and reaping span all of them.
        queues: the dramatiq queues the pool serves.
        max_machines: pool cap on live machines (see :func:`scaler.policy.states.is_live`).
        region: preferred Fly region (informational for the act step).
        boot_timeout_s: a booting machine is destroyed this long after it was created (if it never
            started) or last changed state (a machine started again, e.g. a warm worker).
        max_runtime_s: a machine last started longer ago than this is destroyed; ``None`` means
            no limit.
        max_launches: per-job: launches per message before the act step dead-letters it.
        orphan_grace_s: how long an orphan stays marked before it is destroyed.
        claim_grace_s: per-job: how long a claim may lack a visible machine (listing lag, a create
            in flight) before it is relaunched or its job requeued; also the first wait after a
            create that made no machine, doubled after each further failure up to
            ``relaunch_backoff_max_s``.
        relaunch_backoff_max_s: per-job: the longest wait between two create attempts of one
            claim.
        min_machines: worker: floor of the desired count.
        jobs_per_machine: worker, ``scale_on="depth"``: messages one machine handles at once.
        warm_machines: worker: stopped machines kept for fast starts; extra stopped ones are
            destroyed.
        warm_suspended: worker: idle workers (paused, see ``MachineView.idle_since``) suspended
            instead of left to exit, up to this many suspended machines; suspended machines are
            started before stopped ones; extra suspended ones are destroyed.
        scale_on: worker: the signal, ``"depth"``, ``"latency"`` or ``"prometheus"``.
        target_latency_s: worker, ``"latency"``: scale up while the oldest ready message is older.
        target_per_machine: worker, ``"prometheus"``: metric value one machine absorbs.
        idle_timeout_s: worker: how long a worker waits idle before exiting (used by the act step
            for the machine's environment; the planner never stops started workers).
        min_lifetime_s: worker: a worker does not exit idle before it has run this long (its
            environment; with the tolerance, what bounds the scale actions of a flapping demand
            to about one per ``min_lifetime_s`` per machine of swing).
        scale_tolerance: worker, ``depth``/``prometheus``: no scale-up while the load per live
            machine is within this share above its target (as Kubernetes' HPA: 0.1 = 10 %), so
            a demand hovering at a threshold does not buy and idle out a machine on every swing.
        runner_idle_timeout_s: a per-job pool of GitHub runners (``None``: not one): a runner
            machine started this long ago that GitHub gave no job is destroyed and its message
            given back (see :mod:`scaler.policy.runners`).
        warm_slots: per-job: stopped machines of the pool's template kept to run jobs on
            (:mod:`scaler.policy.slots`); 0: every job creates its machine.
        slot_max_jobs: per-job: a slot is replaced after running this many jobs (``None``: never).
        slot_max_age_s: per-job: a slot is replaced once this old (``None``: never).
        slot_template: per-job: the fingerprint of the pool's current machine template (image,
            size, env, command...); a slot of another fingerprint is never bound again.
    """

    name: str
    mode: PoolMode
    app: str
    queues: tuple[str, ...]
    max_machines: int
    region: str | None = None
    boot_timeout_s: float = 300.0
    max_runtime_s: float | None = None
    max_launches: int = 3
    orphan_grace_s: float = 60.0
    claim_grace_s: float = 30.0
    relaunch_backoff_max_s: float = 300.0
    min_machines: int = 0
    jobs_per_machine: int = 1
    warm_machines: int = 0
    scale_on: ScaleOn = "depth"
    target_latency_s: float = 30.0
    target_per_machine: float = 1.0
    idle_timeout_s: float = 300.0
    scale_tolerance: float = 0.1
    min_lifetime_s: float = 600.0
    runner_idle_timeout_s: float | None = None
    apps: tuple[str, ...] = ()
    warm_suspended: int = 0

    @property
    def fly_apps(self) -> tuple[str, ...]:
        """Every Fly app of the pool: ``apps``, else ``(app,)``."""
        return self.apps or (self.app,)
    warm_slots: int = 0
    slot_max_jobs: int | None = None
    slot_max_age_s: float | None = None
    slot_template: str = ""

    def __post_init__(self) -> None:
        def bad(name: str, value: object, fix: str) -> ValueError:
            return ValueError(f"pool {self.name!r}: {name} is {value!r}; {fix}")

        if not self.name:
            raise ValueError("pool name is empty; give every pool a unique, non-empty name")
        if self.mode not in _MODES:
            raise bad("mode", self.mode, 'use "per-job" or "worker"')
        if not self.app:
            raise bad("app", self.app, "set the Fly app the pool's machines run in")
        if self.apps and (self.apps[0] != self.app or len(set(self.apps)) != len(self.apps)):
            raise bad("apps", self.apps, "list each app once, the pool's app first")
        if self.apps and self.mode != "per-job":
            raise bad("apps", self.apps, "several apps are for per-job pools; use app")
        if not isinstance(self.queues, tuple):
            raise bad("queues", self.queues, "pass a tuple of queue names")
        if self.max_machines < 0:
            raise bad("max_machines", self.max_machines, "use 0 or more")
        if not 0 <= self.min_machines <= self.max_machines:
            raise bad("min_machines", self.min_machines, "use a value between 0 and max_machines")
        if self.jobs_per_machine < 1:
            raise bad("jobs_per_machine", self.jobs_per_machine, "use 1 or more")
        if self.warm_suspended < 0:
            raise bad("warm_suspended", self.warm_suspended, "use 0 or more")
        if self.warm_suspended and self.mode != "worker":
            raise bad("warm_suspended", self.warm_suspended, "per-job machines never suspend")
        if self.warm_machines < 0:
            raise bad("warm_machines", self.warm_machines, "use 0 or more")
        if self.warm_slots < 0:
            raise bad("warm_slots", self.warm_slots, "use 0 or more")
        if self.warm_slots and self.mode != "per-job":
            raise bad("warm_slots", self.warm_slots, "slots are for per-job pools; use 0")
        if self.slot_max_jobs is not None and self.slot_max_jobs < 1:
            raise bad("slot_max_jobs", self.slot_max_jobs, "use 1 or more, or None")
        if self.slot_max_age_s is not None and self.slot_max_age_s <= 0:
            raise bad("slot_max_age_s", self.slot_max_age_s, "use a positive number or None")
        if self.max_launches < 1:
            raise bad("max_launches", self.max_launches, "use 1 or more")
        if self.scale_on not in _SCALE_ON:
            raise bad("scale_on", self.scale_on, 'use "depth", "latency" or "prometheus"')
        if self.target_per_machine <= 0:
            raise bad("target_per_machine", self.target_per_machine, "use a positive number")
        if not 0.0 <= self.scale_tolerance <= 1.0:
            raise bad("scale_tolerance", self.scale_tolerance, "use a share between 0 and 1")
        if self.target_latency_s <= 0:
            raise bad("target_latency_s", self.target_latency_s, "use a positive number of seconds")
        for name in ("boot_timeout_s", "orphan_grace_s", "claim_grace_s", "idle_timeout_s",
                     "relaunch_backoff_max_s", "min_lifetime_s"):
            if getattr(self, name) < 0:
                raise bad(name, getattr(self, name), "use 0 or more seconds")
        if self.max_runtime_s is not None and self.max_runtime_s <= 0:
            raise bad("max_runtime_s", self.max_runtime_s, "use a positive number or None")


@dataclass(frozen=True, slots=True)
class Caps:
    """Caps on live machines beyond each pool's own ``max_machines``.

    Attributes:
        global_max: live machines across every app.
        per_app: live machines per Fly app; an app missing here has no app cap.
        budgets: USD per rolling hour per scope (:mod:`scaler.policy.budget`); none by default.
    """

    global_max: int
    per_app: Mapping[str, int] = field(default_factory=_empty)
    budgets: Budgets = field(default_factory=Budgets)

    def __post_init__(self) -> None:
        if self.global_max < 0:
            raise ValueError(f"caps: global_max is {self.global_max}; use 0 or more")
        for app, cap in self.per_app.items():
            if cap < 0:
                raise ValueError(f"caps: per_app[{app!r}] is {cap}; use 0 or more")


# --------------------------------------------------------------------------------------------------
# Inputs: the observed world


@dataclass(frozen=True, slots=True)
class MachineView:
    """One machine carrying our metadata (the reconciler drops every other machine).

    Attributes:
        id: Fly machine id.
        name: machine name (deterministic per job and launch for per-job pools).
        app: Fly app.
        pool: pool from metadata; ``None`` = ours but the pool is missing or unreadable.
        state: Fly state string (``created``, ``started``, ``stopped``, ...).
        region: Fly region.
        created_at: when the machine was created.
        updated_at: when the machine last changed state.
        started_at: when it last reached ``started``; ``None`` if it never did.
        job: per-job: the dramatiq ``redis_message_id`` it is bound to.
        queue: per-job: the queue of that message.
        message_id: per-job: the dramatiq ``message_id``.
        launch: per-job: the launch number of the job this machine runs.
        orphan_marked_at: ``fly_scaler_orphan_at`` metadata written by an earlier MarkOrphan.
        finished_at: per-job: when the scaler first saw that the job this machine ran finished
            (the runner recorded it as it ended the claim): the machine is exiting, not an
            orphan; it is destroyed only if it lingers past the orphan grace.
        size: preset or guest label, for cost accounting.
        memory_mb: the machine's memory (0 if unknown), for cost accounting.
        idle_since: worker: when the worker paused idle (it takes no message until work
            appears, and may be suspended); ``None`` while it works or never said.
        slot: per-job: the template fingerprint of a warm slot (``fly_scaler_slot``);
            ``None``: not a slot.
        instance_id: Fly's id of the machine's current version (what a wait for ``stopped``
            names); ``None`` if not listed.
    """

    id: str
    name: str
    app: str
    pool: str | None
    state: str
    region: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    job: str | None = None
    queue: str | None = None
    message_id: str | None = None
    launch: int | None = None
    orphan_marked_at: float | None = None
    finished_at: float | None = None
    size: str = ""
    memory_mb: int = 0
    idle_since: float | None = None
    slot: str | None = None
    instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueView:
    """Counts for one dramatiq queue.

    Attributes:
        name: queue name.
        ready: messages waiting to be consumed (claimed ones are not counted here).
        delayed: messages in the delay queue.
        in_flight: messages held by workers (unacked).
        dead: dead-lettered messages.
        claimed: messages claimed by per-job launches.
        oldest_ready_age_s: age of the oldest ready message; ``None`` if unknown or empty.
        delayed_due: delayed messages whose eta has passed (they need a worker to become ready).
    """

    name: str
    ready: int
    delayed: int = 0
    in_flight: int = 0
    dead: int = 0
    claimed: int = 0
    oldest_ready_age_s: float | None = None
    delayed_due: int = 0


@dataclass(frozen=True, slots=True)
class MachineOptions:
    """A job's own machine options (the message's ``fly_machine``), validated and normalized.

    Attributes:
        cpu_kind: with ``cpus`` and ``memory_mb``, the job's own size; all three ``None``: the
            pool's size.
        cpus: see ``cpu_kind``.
        memory_mb: see ``cpu_kind``.
        region: the job's own region; ``None``: the pool's.
    """

    cpu_kind: str | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A per-job claim: a message taken off its queue and bound to one machine. It carries all
    the act step needs to create that machine, so a plan's claim actions are self-contained.

    Attributes:
        queue: the message's queue.
        job: dramatiq ``redis_message_id`` (the idempotency key).
        message_id: dramatiq ``message_id``.
        pool: the pool that claimed it.
        launch: launch number (1 for the first machine).
        claimed_at: when the claim was made.
        machine_name: the deterministic machine name for this job and launch.
        state: ``"claimed"`` (machine being created) or ``"running"`` (the runner picked it up).
        machine_id: the created machine's id, once the create returned.
        machine_options_error: non-``None`` when the message's per-job machine options are
            invalid; the planner dead-letters the message with this text.
        machine_options: the message's own machine options, validated (``None``: it has none;
            its machine is the pool's).
        updated_at: when the claim last changed (``machine_id`` set, relaunched); the grace for a
            missing machine runs from the later of this and ``claimed_at``.
        app: the app the claim's machine was created in (``None``: its pool's app). A claim
            keeps it when its pool is renamed, moved or removed, so its machine is still found.
        create_pending_until: a create for this claim may still be under way until then (in
            this process, or recorded in Redis by the leader that sent it): never relaunched
            before. ``inf`` while this process's create has not returned.
        create_attempts: creates tried for this launch.
        create_failed_at: when the last create made no machine (refused, or abandoned and not
            found); the next attempt backs off from it.
        create_refused: Fly's reason when it refused the last create for good (a bad request,
            not a capacity or rate limit: sending it again changes nothing). A machine shaped by
            the job's own options is the job's fault: the planner dead-letters it.
        enqueued_at: when the message became ready (the enqueue-to-launch metric).
    """

    queue: str
    job: str
    message_id: str
    pool: str
    launch: int
    claimed_at: float
    machine_name: str
    state: Literal["claimed", "running"] = "claimed"
    machine_id: str | None = None
    machine_options_error: str | None = None
    updated_at: float | None = None
    app: str | None = None
    create_pending_until: float | None = None
    create_attempts: int = 1
    create_failed_at: float | None = None
    create_refused: str | None = None
    machine_options: MachineOptions | None = None
    enqueued_at: float | None = None


@dataclass(frozen=True, slots=True)
class RunnerView:
    """A GitHub runner machine of a runner pool, as the job events left it.

    Attributes:
        machine_name: the machine's (and the runner's) name.
        busy: a job started on it (GitHub assigned it one).
        registered_at: when its just-in-time config was generated.
    """

    machine_name: str
    busy: bool
    registered_at: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything one tick observed. A ``None`` value means "could not read": unknown, never zero.

    Attributes:
        now: the tick's clock.
        queues: per queue name; ``None`` = unreadable.
        machines_by_app: per app; ``None`` = the listing failed. An app of a configured pool that
            is absent here is treated as unknown.
        claims: per queue name; ``None`` = unreadable. A queue absent here has no claims.
        inflight: per pool, launches/creates/starts already started by the act step and not yet
            visible in listings; they count against every cap.
        create_budget: per app, ``Machines_create`` tokens available now; an app absent here has a
            budget of 0 (nothing is created on it; decisions say "rate_limit").
        metric_values: per pool, the value for ``scale_on="prometheus"``; ``None`` or absent =
            unknown.
        runners: GitHub runner pools: per machine name, what GitHub told of its runner.
        github_queued: GitHub runner pools: per pool, its jobs queued on GitHub that no runner
            started yet; ``None`` or absent = unknown.
        spend: USD spent in the rolling hour and each pool's price (:mod:`scaler.policy.budget`);
            ``None`` = unreadable: pools under a budget launch nothing.
        slot_jobs: per slot machine id, the jobs bound to it so far (absent: none); ``None``:
            unreadable (no slot is bound or replaced for its job count then).
    """

    now: float
    queues: Mapping[str, QueueView | None] = field(default_factory=dict)
    machines_by_app: Mapping[str, tuple[MachineView, ...] | None] = field(default_factory=dict)
    claims: Mapping[str, tuple[ClaimView, ...] | None] = field(default_factory=dict)
    inflight: Mapping[str, int] = field(default_factory=_empty)
    create_budget: Mapping[str, float] = field(default_factory=dict)
    metric_values: Mapping[str, float | None] = field(default_factory=dict)
    runners: Mapping[str, RunnerView] = field(default_factory=dict)
    github_queued: Mapping[str, int | None] = field(default_factory=dict)
    spend: Spend | None = None
    slot_jobs: Mapping[str, int] | None = field(default_factory=_empty)
