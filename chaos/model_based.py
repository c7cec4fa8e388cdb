"""A model-based test of the whole per-job path: hypothesis drives random sequences of enqueues,
ticks, scaler crashes and restarts, Fly faults, machines running, finishing or dying, Redis pauses
and clock steps against the real scaler (its reconciler, planner and act step, in this process),
real Redis and the local Machines API (simulated machines), and checks the invariants after every
step:

- one machine per job: never two live machines for one job;
- caps: live machines never above the pool cap;
- a job completes at most once;

and, after a fault-free drain at the end of every sequence, that every job completed once or was
dead-lettered with a reason (none lost) and that no machine is left (none leaked). A failing
sequence is shrunk by hypothesis to a short one, which the scenario reports.

The machines' runner is played by the test itself, with the runner's own Redis scripts
(:class:`scaler.jobs.claims.RunnerClaim`): a machine *starts its job* (takes the claim, as
``workers.runner`` does first), later *finishes* it (acks, then exits 0) or *dies* (exits 137).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chaos.inproc import FakeClock, InProcessScaler
from scaler.config import Settings, parse_settings
from scaler.jobs.claims import RunnerClaim, dead_reasons_key
from scaler.policy.states import is_live

__all__ = ["FAULTS", "ModelReport", "Rig", "rig", "run_model"]

POOL_CAP = 2
MAX_LAUNCHES = 3
CLAIM_GRACE_S = 5.0
ORPHAN_GRACE_S = 10.0
DRAIN_TICKS = 60
MAX_PAUSES = 2
MAX_RESTARTS = 3
MAX_WAITS = 3
WAIT_S = 0.7
"""Real seconds a ``wait_a_second`` step lets pass (slow creates and boots take 1.2 s)."""
REDIS_TIMEOUT_S = 0.25

FAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "create_5xx": {"Machines_create": {"error_rate": 0.5}},
    "create_ambiguous": {"Machines_create": {"ambiguous_rate": 0.5, "ambiguous_mode": "drop"}},
    "create_429": {"Machines_create": {"rate_limit_rate": 0.7}},
    "create_capacity": {"Machines_create": {"capacity_rate": 1.0}},
    "slow_create": {"Machines_create": {"latency": 1.2}},
    "slow_answer": {"Machines_create": {"latency_after_commit": 0.8}},
    "list_down": {"Machines_list": {"error_rate": 1.0}},
    "slow_boot": {"machines": {"boot_delay": 1.2}},
    "outage": {"*": {"drop_rate": 1.0}},
}
"""Fly faults a step may switch on (each replaces the previous one)."""


@dataclass
class Rig:
    """What every example shares: Redis (a private one: steps pause it), the local Machines API
    (simulated machines; its admin side), and the event loop the scaler runs on."""

    redis_url: str
    api_url: str
    token: str
    loop: asyncio.AbstractEventLoop
    admin: httpx.Client


@contextlib.contextmanager
def rig(redis_url: str, api_url: str, token: str) -> Iterator[Rig]:
    """The shared parts, closed on exit. The local API should run ``--runtime sim`` without rate
    limits of its own (the scaler's governor keeps Fly's, on the fake clock)."""
    loop = asyncio.new_event_loop()
    admin = httpx.Client(base_url=api_url, timeout=10,
                         headers={"Authorization": f"Bearer {token}"})
    try:
        yield Rig(redis_url, api_url, token, loop, admin)
    finally:
        admin.close()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@dataclass
class ModelReport:
    """What the runs saw, over every example (for the table and the notes)."""

    examples: int = 0
    regressions: int = 0
    steps: int = 0
    jobs: int = 0
    completed_once: int = 0
    dead_lettered: int = 0
    peak_live: int = 0
    max_live_per_job: int = 0
    max_machines_per_job: int = 0
    leaked: int = 0
    rate_limited: int = 0
    seconds: float = 0.0
    failure: str | None = None
    minimal_steps: list[str] = field(default_factory=list)


def _runner_claim(client: redis.Redis, ns: str, prefix: str, queue: str, job: str,
                  launch: int) -> RunnerClaim:
    kwargs: dict[str, Any] = {"namespace": ns, "prefix": prefix, "queue": queue,
                              "redis_message_id": job}
    if "launch" in inspect.signature(RunnerClaim).parameters:
        kwargs["launch"] = launch
    return RunnerClaim(client, **kwargs)


class _World:
    """One example's app, keys, scaler and bookkeeping."""

    def __init__(self, r: Rig, report: ModelReport) -> None:
        self.rig = r
        self.report = report
        self.ns = f"r16{uuid.uuid4().hex[:10]}"
        self.prefix = f"{self.ns}fs"
        self.queue = "jobs"
        self.app = f"app-{self.ns}"
        self.clock = FakeClock()
        self.fault = "none"
        self.set_faults()
        resp = r.admin.post("/v1/apps", json={"name": self.app, "org_slug": "personal"})
        resp.raise_for_status()
        self.settings = self._settings()
        self.redis = redis.Redis.from_url(r.redis_url, decode_responses=True, socket_timeout=10)
        from workers.enqueue import redis_broker_from_env

        self.broker = redis_broker_from_env(
            {"REDIS_URL": r.redis_url, "FLY_SCALER_NAMESPACE": self.ns,
             "FLY_SCALER_PREFIX": self.prefix}, set_default=False,
        )
        self.broker.declare_queue(self.queue)
        self.jobs: list[str] = []
        self.running: dict[str, tuple[str, int]] = {}  # machine id -> (job, launch)
        self.pauses = 0
        self.restarts = 0
        self.waits = 0
        self.scaler = InProcessScaler(self.settings, self.clock, redis_timeout=REDIS_TIMEOUT_S)

    def _settings(self) -> Settings:
        pool = {
            "name": "jobs", "mode": "per-job", "app": self.app, "queues": [self.queue],
            "max_machines": POOL_CAP, "image": "local/sim:latest", "boot_timeout": "30s",
            "max_runtime": "120s", "max_launches": MAX_LAUNCHES,
        }
        data = {
            "fly": {"api_url": self.rig.api_url, "timeout": "3s"},
            "redis": {"url": self.rig.redis_url, "namespace": self.ns, "prefix": self.prefix},
            "scaler": {
                "id": self.ns, "max_machines": POOL_CAP + 1, "resync_interval": "1s",
                "tick_deadline": "0.3s", "orphan_grace": f"{ORPHAN_GRACE_S}s",
                "claim_grace": f"{CLAIM_GRACE_S}s", "shared_rate_limits": False,
                "event_wakeups": False,
            },
            "pools": [pool],
            "http": {"host": "127.0.0.1"},
        }
        return parse_settings(data, env={"FLY_API_TOKEN": self.rig.token})

    # -- the world ----------------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.rig.loop.run_until_complete(coro)

    def set_faults(self) -> None:
        spec = {**FAULTS[self.fault], "clock": {"offset": self.clock.offset}}
        self.rig.admin.post("/_admin/faults", json=spec).raise_for_status()

    def machines(self) -> list[dict[str, Any]]:
        """Every machine of the app, destroyed ones included (the admin listing: no fault)."""
        out: list[dict[str, Any]] = self.rig.admin.get(f"/_admin/apps/{self.app}/machines").json()
        return out

    def started(self) -> list[dict[str, Any]]:
        return sorted((m for m in self.machines() if m["state"] == "started"),
                      key=lambda m: str(m["id"]))

    def peak_live(self) -> int:
        """The most live machines the app had at once (counted at every state change)."""
        state = self.rig.admin.get("/_admin/state").json()
        return int(state.get("peak_live", {}).get(self.app, 0))

    def rate_limited(self) -> int:
        state = self.rig.admin.get("/_admin/state").json()
        return sum(int(n) for n in state.get("rate_limited", {}).values())

    @staticmethod
    def binding(m: dict[str, Any]) -> tuple[str, int] | None:
        meta = (m.get("config") or {}).get("metadata") or {}
        job, launch = meta.get("fly_scaler_job"), meta.get("fly_scaler_launch")
        if not job or not str(launch).isdigit():
            return None
        return str(job), int(str(launch))

    def exit(self, m: dict[str, Any], code: int) -> None:
        self.rig.admin.post(
            f"/_admin/apps/{self.app}/machines/{m['id']}/exit", json={"exit_code": code}
        )

    def tick(self) -> None:
        async def go() -> None:
            await self.scaler.tick()
            await asyncio.sleep(0.02)  # let the act step's calls and the machines move on

        self.run(go())

    def runner_start(self, m: dict[str, Any]) -> bool:
        bound = self.binding(m)
        if bound is None or m["id"] in self.running:
            return False
        job, launch = bound
        claim = _runner_claim(self.redis, self.ns, self.prefix, self.queue, job, launch)
        if claim.mark_running(str(m["id"]), int(self.clock.wall() * 1000)):
            self.running[str(m["id"])] = bound
            return True
        self.exit(m, 0)  # the claim is gone or another machine's: the runner exits at once
        return False

    def runner_finish(self, m: dict[str, Any]) -> None:
        job, launch = self.running.pop(str(m["id"]))
        claim = _runner_claim(self.redis, self.ns, self.prefix, self.queue, job, launch)
        self.redis.rpush(f"{self.ns}:completed", job)
        claim.finish("ack", int(self.clock.wall() * 1000), machine_id=str(m["id"]))
        self.exit(m, 0)

    def step_clock(self, seconds: float) -> None:
        self.clock.step(seconds)
        self.set_faults()  # Fly's clock moves with ours: time passes for both

    # -- measures ----------------------------------------------------------------------------

    def completions(self) -> Counter[str]:
        return Counter(str(x) for x in self.redis.lrange(f"{self.ns}:completed", 0, -1))

    def live_per_job(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for m in self.machines():
            bound = self.binding(m)
            if bound is not None and is_live(str(m["state"])):
                out[bound[0]] += 1
        return out

    def machines_per_job(self) -> Counter[str]:
        return Counter(b[0] for m in self.machines() if (b := self.binding(m)) is not None)

    def live(self) -> int:
        return sum(is_live(str(m["state"])) for m in self.machines())

    def dead(self) -> set[str]:
        return {str(x) for x in self.redis.zrange(f"{self.ns}:{self.queue}.XQ", 0, -1)}

    def drained(self) -> bool:
        if self.redis.llen(f"{self.ns}:{self.queue}") or self.redis.hlen(
            f"{self.prefix}:claims:{self.queue}"
        ):
            return False
        if self.live():
            return False
        done = set(self.completions()) | self.dead()
        return all(j in done for j in self.jobs)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.scaler.stop())
        self.broker.close()
        with contextlib.suppress(Exception):
            keys = list(self.redis.scan_iter(match=f"{self.ns}*", count=1000))
            if keys:
                self.redis.delete(*keys)
        self.redis.close()
        self.fault = "none"
        self.clock = FakeClock()
        with contextlib.suppress(Exception):
            self.set_faults()


def _machine_class(r: Rig, report: ModelReport) -> type[RuleBasedStateMachine]:
    class ScalerModel(RuleBasedStateMachine):
        """Random steps against the real scaler; invariants after each (see the module doc).
        Every event is followed by one tick of the scaler, as its loop would."""

        def __init__(self) -> None:
            super().__init__()
            self.w = _World(r, report)
            report.examples += 1

        def _enqueue(self, n: int) -> None:
            import dramatiq

            for _ in range(n):
                msg: dramatiq.Message[Any] = dramatiq.Message(
                    queue_name=self.w.queue, actor_name="record", args=(), kwargs={},
                    options={},
                )
                sent = self.w.broker.enqueue(msg)
                self.w.jobs.append(str(sent.options["redis_message_id"]))

        @initialize(n=st.integers(2, 5), fault=st.sampled_from(sorted(FAULTS)))
        def enqueue_initial(self, n: int, fault: str) -> None:
            """A backlog, and the weather the sequence starts in (a Fly fault, or none)."""
            self._enqueue(n)
            self.w.fault = fault
            self.w.set_faults()

        @rule(n=st.integers(1, 3))
        def enqueue(self, n: int) -> None:
            self._enqueue(n)
            self.w.tick()

        @rule()
        def tick(self) -> None:
            self.w.tick()

        @precondition(lambda self: self.w.waits < MAX_WAITS)
        @rule()
        def wait_a_second(self) -> None:
            """Real time passes (slow creates land, machines boot), then a tick."""
            self.w.waits += 1
            time.sleep(WAIT_S)
            self.w.tick()

        @rule(i=st.integers(0, 3))
        def machine_starts_job(self, i: int) -> None:
            started = [m for m in self.w.started() if m["id"] not in self.w.running]
            if started:
                self.w.runner_start(started[i % len(started)])
            self.w.tick()

        @rule(i=st.integers(0, 3))
        def machine_finishes_job(self, i: int) -> None:
            running = [m for m in self.w.started() if m["id"] in self.w.running]
            if running:
                self.w.runner_finish(running[i % len(running)])
            self.w.tick()

        @rule(i=st.integers(0, 3))
        def machine_dies(self, i: int) -> None:
            started = self.w.started()
            if started:
                m = started[i % len(started)]
                self.w.running.pop(str(m["id"]), None)
                self.w.exit(m, 137)
            self.w.tick()

        @precondition(lambda self: self.w.restarts < MAX_RESTARTS)
        @rule()
        def scaler_crashes_and_restarts(self) -> None:
            w = self.w
            w.restarts += 1
            w.run(w.scaler.crash())
            # The replacement starts once the dead replica's lease has expired.
            w.redis.delete(f"{w.prefix}:leader")
            w.scaler = InProcessScaler(w.settings, w.clock, redis_timeout=REDIS_TIMEOUT_S)
            w.tick()

        @precondition(lambda self: self.w.restarts < MAX_RESTARTS)
        @rule()
        def scaler_redeployed(self) -> None:
            w = self.w
            w.restarts += 1
            w.run(w.scaler.stop())
            w.scaler = InProcessScaler(w.settings, w.clock, redis_timeout=REDIS_TIMEOUT_S)
            w.tick()

        @rule(kind=st.sampled_from(sorted(FAULTS)))
        def fly_fault(self, kind: str) -> None:
            self.w.fault = kind
            self.w.set_faults()
            self.w.tick()

        @precondition(lambda self: self.w.pauses < MAX_PAUSES)
        @rule()
        def redis_paused_during_tick(self) -> None:
            self.w.pauses += 1
            self.w.redis.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "PAUSE", "500", "ALL"
            )
            self.w.tick()

        @rule(seconds=st.sampled_from([1.0, 3.0, 6.0, 45.0]))
        def clock_step(self, seconds: float) -> None:
            self.w.step_clock(seconds)
            self.w.tick()

        @invariant()
        def one_live_machine_per_job(self) -> None:
            report.steps += 1
            per_job = self.w.live_per_job()
            worst = max(per_job.values(), default=0)
            report.max_live_per_job = max(report.max_live_per_job, worst)
            report.max_machines_per_job = max(
                report.max_machines_per_job, max(self.w.machines_per_job().values(), default=0)
            )
            assert worst <= 1, f"invariant 1: a job has {worst} live machines: {dict(per_job)}"

        @invariant()
        def caps_hold(self) -> None:
            peak = self.w.peak_live()
            report.peak_live = max(report.peak_live, peak)
            assert peak <= POOL_CAP, (
                f"invariant 4: {peak} machines live at once, pool cap {POOL_CAP}"
            )

        @invariant()
        def completes_at_most_once(self) -> None:
            twice = {j: n for j, n in self.w.completions().items() if n > 1}
            assert not twice, f"invariant 1: jobs completed more than once: {twice}"

        def check_all(self) -> None:
            """Every invariant (for sequences replayed outside hypothesis)."""
            self.one_live_machine_per_job()
            self.caps_hold()
            self.completes_at_most_once()

        def teardown(self) -> None:
            w = self.w
            try:
                w.fault = "none"
                w.set_faults()
                for i in range(DRAIN_TICKS):
                    w.tick()
                    for m in w.started():
                        if m["id"] in w.running or w.runner_start(m):
                            w.runner_finish(m)
                    if w.drained():
                        break
                    # Short steps first (graces), then long ones: a claim may back off for
                    # minutes after failed creates, and a create window may be pending.
                    w.step_clock(2.0 if i < 10 else 20.0)
                report.jobs += len(w.jobs)
                completed = w.completions()
                dead = w.dead()
                reasons = w.redis.hgetall(dead_reasons_key(w.prefix, w.queue))
                report.completed_once += sum(completed.get(j) == 1 for j in w.jobs)
                report.dead_lettered += sum(j in dead for j in w.jobs)
                report.rate_limited = w.rate_limited()
                lost = [j for j in w.jobs if j not in completed and j not in dead]
                unexplained = [j for j in w.jobs if j in dead and j not in reasons]
                leaked = w.live()
                report.leaked += leaked
                peak = w.peak_live()
                report.peak_live = max(report.peak_live, peak)
                assert peak <= POOL_CAP, (
                    f"invariant 4: {peak} machines live at once, pool cap {POOL_CAP}"
                )
                claims = {str(k): str(v) for k, v in
                          w.redis.hgetall(f"{w.prefix}:claims:{w.queue}").items()}
                assert not lost, (
                    f"invariant 2: {len(lost)} job(s) neither completed nor dead-lettered after "
                    f"a fault-free drain of {DRAIN_TICKS} ticks ({w.clock.offset:.0f} s of fake "
                    f"time): " + "; ".join(f"{j}: {claims.get(j) or 'no claim'}" for j in lost)
                )
                assert not unexplained, (
                    f"invariant 2: {len(unexplained)} job(s) dead-lettered without a reason"
                )
                assert leaked == 0, f"invariant 3: {leaked} machine(s) left after the drain"
            finally:
                w.close()

    return ScalerModel


Step = tuple[str, dict[str, Any]]

REGRESSIONS: dict[str, list[Step]] = {
    "creates still pending count against the cap": [
        ("enqueue_initial", {"n": 3, "fault": "none"}), ("fly_fault", {"kind": "slow_create"}),
        ("clock_step", {"seconds": 3.0}), ("wait_a_second", {}), ("wait_a_second", {}),
    ],
    "machines still booting count against the cap": [
        ("enqueue_initial", {"n": 3, "fault": "slow_boot"}), ("tick", {}),
        ("clock_step", {"seconds": 1.0}), ("tick", {}), ("wait_a_second", {}),
    ],
    "a crash between a create and its answer": [
        ("enqueue_initial", {"n": 2, "fault": "none"}), ("fly_fault", {"kind": "slow_answer"}),
        ("scaler_crashes_and_restarts", {}), ("clock_step", {"seconds": 6.0}),
        ("wait_a_second", {}), ("machine_starts_job", {"i": 0}),
        ("machine_finishes_job", {"i": 0}),
    ],
}
"""Sequences replayed before the random search on every run: failures found before (by this
model or by hand), kept so a quick run still tries them."""


def _describe(steps: list[Step]) -> list[str]:
    return [f"state.{name}({', '.join(f'{k}={v!r}' for k, v in kw.items())})"
            for name, kw in steps]


def _steps(exc: BaseException) -> list[str]:
    """The steps of hypothesis' (shrunk) falsifying example, from the notes it adds."""
    lines = [line.strip() for note in getattr(exc, "__notes__", [])
             for line in str(note).splitlines()]
    checks = ("state.teardown(", "state.caps_hold(", "state.completes_at_most_once(",
              "state.one_live_machine_per_job(")
    return [line for line in lines if line.startswith("state.") and not line.startswith(checks)]


def _replay(machine: type[RuleBasedStateMachine], steps: list[Step]) -> None:
    m = machine()
    try:
        for name, kwargs in steps:
            getattr(m, name)(**kwargs)
            m.check_all()  # type: ignore[attr-defined]
    finally:
        m.teardown()


def run_model(
    r: Rig, *, examples: int, steps: int, shrink_seconds: float, replay: bool = True
) -> ModelReport:
    """Run the state machine for ``examples`` sequences of up to ``steps`` steps (derandomized:
    the same sequences every run); a failure is shrunk for at most ``shrink_seconds`` and
    reported, not raised. ``replay``: the known sequences first (:data:`REGRESSIONS`)."""
    from hypothesis.internal.conjecture import engine

    report = ModelReport()
    machine = _machine_class(r, report)
    config = settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False, verbosity=Verbosity.normal,
        derandomize=True,
    )
    started = time.monotonic()
    for name, sequence in REGRESSIONS.items() if replay else ():
        try:
            _replay(machine, sequence)
        except AssertionError as exc:
            report.failure = f"{str(exc).splitlines()[0]} (known sequence: {name})"
            report.minimal_steps = _describe(sequence)
            report.seconds = time.monotonic() - started
            return report
        report.regressions += 1
    previous = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if previous is not None:
        engine.MAX_SHRINKING_SECONDS = int(shrink_seconds)
    try:
        run_state_machine_as_test(machine, settings=config)
    except AssertionError as exc:
        report.failure = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        report.minimal_steps = _steps(exc)
    except Exception as exc:
        report.failure = f"{type(exc).__name__}: {exc}"
        report.minimal_steps = _steps(exc)
    finally:
        if previous is not None:
            engine.MAX_SHRINKING_SECONDS = previous
        report.seconds = time.monotonic() - started
    return report

