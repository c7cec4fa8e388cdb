"""The machine state machine (docs/fly-behaviour.md, "States"): what each API action does to a
machine, the asynchronous transitions that follow, restart policies and ``auto_destroy``.

Every action validates the current state synchronously (so the HTTP answer is exact) and then
runs the slow part as a task. Each action bumps ``machine.op``; a task that finds ``op`` changed
after an ``await`` gives way to the newer action.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as signals
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from scaler.local import ids
from scaler.local.clock import wall
from scaler.local.config import Timings
from scaler.local.errors import APIError
from scaler.local.faults import FaultInjector
from scaler.local.model import Lease, MachineRecord
from scaler.local.runtime import Runtime, RuntimeStartError
from scaler.local.store import Store
from scaler.local.validation import parse_duration, parse_signal

__all__ = ["RESTART_WINDOW", "SETTLED", "Engine"]

RESTART_WINDOW = 300.0
DEFAULT_MAX_RETRIES = 10
DEFAULT_STOP_TIMEOUT = 5.0
SETTLED = frozenset({"created", "started", "stopped", "suspended", "failed", "destroyed"})
STARTABLE = frozenset({"created", "stopped", "suspended", "failed"})
DESTROYABLE = frozenset({"created", "stopped", "suspended", "failed"})
RUNNING = frozenset({"starting", "started", "restarting"})


class Engine:
    """Drives machines through their states; owns the runtime and the background tasks."""

    def __init__(
        self,
        store: Store,
        timings: Timings,
        faults: FaultInjector,
        runtime_factory: Callable[[Callable[[MachineRecord, int, int, int | None], None]], Runtime],
        clock: Callable[[], float] = time.monotonic,
        destroyed_retention: int = 5000,
    ) -> None:
        self.store = store
        self.timings = timings
        self.faults = faults
        self.clock = clock
        self.runtime = runtime_factory(self._on_exit)
        self.destroyed_retention = destroyed_retention
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _begin(self, m: MachineRecord) -> int:
        m.op += 1
        timer = self._timers.pop(m.id, None)
        if timer is not None:
            timer.cancel()
        return m.op

    def set_state(self, m: MachineRecord, state: str) -> None:
        """Change state and wake waiters."""
        old, m.state = m.state, state
        self.store.state_changed(m.app, old, state)
        m.touch()
        self.store.notify(m.id)

    async def close(self) -> None:
        """Stop every task and every main process."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.runtime.close()

    # -- create / update ----------------------------------------------------------------------

    def create(
        self,
        app: str,
        name: str,
        region: str,
        config: dict[str, Any],
        *,
        skip_launch: bool,
        lease_ttl: int | None,
        owner: str,
        cordoned: bool,
    ) -> MachineRecord:
        """Register a machine in ``created`` and, unless ``skip_launch``, boot it."""
        now = wall()
        m = MachineRecord(app, name, region, config, now)
        m.cordoned = cordoned
        m.add_event("launch", "created", "user", now=now)
        if lease_ttl:
            m.lease = Lease(ids.lease_nonce(), owner, "", now + lease_ttl, ids.ulid(now))
            m.nonce = m.lease.nonce
        self.store.add_machine(m)
        if not skip_launch:
            self._spawn(self._boot(m, self._begin(m), self.timings.create, "launch"))
        return m

    def update(self, m: MachineRecord, config: dict[str, Any], *, skip_launch: bool) -> None:
        """Replace the config with a new version; reboot a running machine onto it."""
        if m.state in ("replacing", "destroying", "destroyed"):
            raise APIError(
                409 if m.state == "replacing" else 412,
                f"aborted: machine is {m.state}"
                + (": concurrent update in progress" if m.state == "replacing" else ""),
            )
        now = wall()
        m.config = config
        m.instance_id = ids.ulid(now)
        m.image_ref = ids.image_ref(str(config.get("image", "")))
        m.versions.insert(0, (m.instance_id, config))
        was = m.state
        op = self._begin(m)
        if was in RUNNING or was in ("stopping", "suspending"):
            m.add_event("update", "replacing", "user", now=now)
            self.set_state(m, "replacing")
            self._spawn(self._replace(m, op, relaunch=not skip_launch))
        else:
            # "machine was in a non-started state prior to the update so leaving it stopped"
            new_state = "created" if was == "created" else "stopped"
            m.add_event("update", new_state, "user", now=now)
            if was == "suspended":
                self._spawn(self.runtime.stop(m, signals.SIGKILL, 0))
            self.set_state(m, new_state)

    async def _replace(self, m: MachineRecord, op: int, relaunch: bool) -> None:
        await self.runtime.stop(m, *self._stop_params(m, None, None))
        await asyncio.sleep(self.timings.update)
        if m.op != op:
            return
        if relaunch:
            await self._boot(m, op, 0.0, "update")
        else:
            self.set_state(m, "stopped")

    # -- boot and exit ------------------------------------------------------------------------

    async def _boot(self, m: MachineRecord, op: int, delay: float, reason: str) -> None:
        placement = self.faults.spec.machines.boot_delay if reason == "launch" else 0.0
        if placement:  # a slow placement: the machine stays created meanwhile
            await asyncio.sleep(placement)
            if m.op != op:
                return
        self.set_state(m, "starting")
        if delay:
            await asyncio.sleep(delay)
        if m.op != op:
            return
        fault = self.faults.for_boot()
        if fault.never_boot:
            self.store.faults_injected["never_boot"] += 1
            return
        m.run_token += 1
        token = m.run_token
        try:
            await self.runtime.start(m, token)
        except RuntimeStartError as exc:
            if m.op == op:
                m.add_event("launch" if reason == "launch" else "start", "failed", "flyd",
                            request={"error": str(exc)})
                self.set_state(m, "failed")
            return
        if m.op != op:
            await self.runtime.stop(m, signals.SIGKILL, 0)
            return
        m.add_event("start", "started", "flyd")
        self.set_state(m, "started")
        if fault.crash_after is not None:
            self.store.faults_injected["crash"] += 1
            self._timers[m.id] = asyncio.get_running_loop().call_later(
                fault.crash_after, self._crash, m, token, fault.crash_exit_code
            )

    def _crash(self, m: MachineRecord, token: int, code: int) -> None:
        self._timers.pop(m.id, None)
        if m.run_token == token and m.state == "started":
            self.runtime.inject_exit(m, code)

    def inject_exit(self, m: MachineRecord, code: int) -> None:
        """Make a running machine's main process end with ``code`` (admin endpoint)."""
        if m.state != "started" or not self.runtime.inject_exit(m, code):
            raise APIError(412, f"machine is {m.state}, not running a main process")

    def _on_exit(self, m: MachineRecord, token: int, code: int, sig: int | None) -> None:
        """The main process ended on its own: apply the restart policy and auto_destroy."""
        if token != m.run_token or m.state not in ("started", "starting"):
            return
        timer = self._timers.pop(m.id, None)
        if timer is not None:
            timer.cancel()
        restart = self._should_restart(m, code)
        exit_event = {
            "exit_code": code,
            "guest_exit_code": code,
            "guest_signal": sig or 0,
            "oom_killed": False,
            "requested_stop": False,
            "restarting": restart,
            "signal": sig if sig is not None else -1,
            "exited_at": ids.rfc3339(wall()),
        }
        m.add_event("exit", "stopped", "flyd", request={"exit_event": exit_event})
        op = self._begin(m)
        if restart:
            m.restarts.append(self.clock())
            backoff = min(0.05 * len(m.restarts), 1.0)
            self._spawn(self._boot(m, op, max(self.timings.start, backoff), "restart"))
        else:
            self.set_state(m, "stopped")
            if m.config.get("auto_destroy"):
                self._spawn(self._destroy(m, self._begin(m), force=False, auto=True))

    def _should_restart(self, m: MachineRecord, code: int) -> bool:
        restart = m.config.get("restart") or {}
        policy = restart.get("policy") or "on-failure"
        if policy == "always":
            return True
        if policy != "on-failure" or code == 0:
            return False
        limit = restart.get("max_retries") or DEFAULT_MAX_RETRIES
        since = self.clock() - RESTART_WINDOW
        m.restarts[:] = [t for t in m.restarts if t > since]
        return len(m.restarts) < limit

    # -- user actions -------------------------------------------------------------------------

    def start(self, m: MachineRecord) -> str:
        """Start a stopped/created/suspended/failed machine; returns the previous state."""
        previous = m.state
        if previous == "started":
            return previous
        if previous not in STARTABLE:
            raise APIError(412, f"unable to start machine from current state: '{previous}'")
        op = self._begin(m)
        m.add_event("start", "starting", "user")
        m.restarts.clear()
        if previous == "suspended" and self.runtime.running(m):
            self._spawn(self._resume(m, op))
        else:
            delay = self.timings.create if previous == "created" else self.timings.start
            self._spawn(self._boot(m, op, delay, "start"))
        return previous

    async def _resume(self, m: MachineRecord, op: int) -> None:
        self.set_state(m, "starting")
        await asyncio.sleep(self.timings.resume)
        if m.op != op:
            return
        self.runtime.resume(m)
        m.add_event("start", "started", "flyd")
        self.set_state(m, "started")

    def _stop_params(self, m: MachineRecord, sig: Any, timeout: Any) -> tuple[int, float]:
        stop_config = m.config.get("stop_config") or {}
        signal = parse_signal(sig if sig else stop_config.get("signal") or "SIGINT")
        if timeout is not None and timeout != "":
            seconds = parse_duration(timeout, "timeout")
        elif stop_config.get("timeout") is not None:
            seconds = parse_duration(stop_config["timeout"], "config.stop_config.timeout")
        else:
            seconds = DEFAULT_STOP_TIMEOUT
        return signal, seconds

    def stop(self, m: MachineRecord, sig: Any = None, timeout: Any = None) -> None:
        """Stop a running machine (signal, then SIGKILL after the timeout)."""
        signal, seconds = self._stop_params(m, sig, timeout)
        if m.state in ("stopped", "created", "stopping"):
            return
        if m.state in ("destroying", "destroyed"):
            raise APIError(412, f"unable to stop machine from current state: '{m.state}'")
        op = self._begin(m)
        m.add_event("stop", "stopping", "user")
        self.set_state(m, "stopping")
        self._spawn(self._stop(m, op, signal, seconds))

    async def _stop(self, m: MachineRecord, op: int, signal: int, grace: float) -> None:
        code = await self.runtime.stop(m, signal, grace)
        await asyncio.sleep(self.timings.stop)
        if m.op != op:
            return
        exit_event = {
            "exit_code": code if code is not None else 0,
            "requested_stop": True,
            "restarting": False,
            "signal": signal,
            "exited_at": ids.rfc3339(wall()),
        }
        m.add_event("exit", "stopped", "flyd", request={"exit_event": exit_event})
        self.set_state(m, "stopped")
        if m.config.get("auto_destroy"):
            self._spawn(self._destroy(m, self._begin(m), force=False, auto=True))

    def restart(self, m: MachineRecord, sig: Any = None, timeout: Any = None) -> None:
        """Stop and start again (same version)."""
        signal, seconds = self._stop_params(m, sig, timeout)
        if m.state not in RUNNING:
            raise APIError(412, f"unable to restart machine from current state: '{m.state}'")
        op = self._begin(m)
        m.add_event("restart", "restarting", "user")
        self.set_state(m, "restarting")
        self._spawn(self._restart(m, op, signal, seconds))

    async def _restart(self, m: MachineRecord, op: int, signal: int, grace: float) -> None:
        await self.runtime.stop(m, signal, grace)
        if m.op == op:
            await self._boot(m, op, self.timings.start, "restart")

    def suspend(self, m: MachineRecord) -> None:
        """Freeze a started machine."""
        if m.state == "suspended":
            return
        if m.state != "started":
            raise APIError(412, f"unable to suspend machine from current state: '{m.state}'")
        op = self._begin(m)
        m.add_event("suspend", "suspending", "user")
        self.set_state(m, "suspending")
        self._spawn(self._suspend(m, op))

    async def _suspend(self, m: MachineRecord, op: int) -> None:
        self.runtime.suspend(m)
        await asyncio.sleep(self.timings.suspend)
        if m.op == op:
            m.add_event("suspend", "suspended", "flyd")
            self.set_state(m, "suspended")

    def signal(self, m: MachineRecord, sig: Any) -> None:
        """Deliver a signal to the main process."""
        signal = parse_signal(sig)
        if m.state != "started" or not self.runtime.signal(m, signal):
            raise APIError(412, f"machine is {m.state}: no main process to signal")

    def destroy(self, m: MachineRecord, force: bool) -> None:
        """Destroy (force: from any state, killing the main process)."""
        if m.state == "destroyed":
            raise APIError(404, "machine not found")
        if m.state == "destroying":
            return
        if not force and m.state not in DESTROYABLE:
            raise APIError(
                412,
                f"unable to destroy machine, not currently stopped or suspended (state "
                f"'{m.state}'); stop it first or pass force=true",
            )
        self._spawn(self._destroy(m, self._begin(m), force=force, auto=False))
        m.add_event("destroy", "destroying", "user")
        self.set_state(m, "destroying")

    async def _destroy(self, m: MachineRecord, op: int, *, force: bool, auto: bool) -> None:
        if m.state != "destroying":
            m.add_event("destroy", "destroying", "flyd" if auto else "user")
            self.set_state(m, "destroying")
        await self.runtime.stop(m, signals.SIGKILL, 0)
        await asyncio.sleep(self.timings.destroy)
        if m.op != op:
            return
        m.add_event("destroy", "destroyed", "flyd" if auto else "user")
        m.lease = None
        app = self.store.apps.get(m.app)
        if app is not None:
            for vol in app.volumes.values():
                if vol.attached_machine_id == m.id:
                    vol.attached_machine_id = None
            app.destroyed.append(m.id)
            while len(app.destroyed) > self.destroyed_retention:
                old = app.machines.get(app.destroyed.pop(0))
                if old is not None:
                    self.store.forget_machine(old)
        else:  # its app was deleted meanwhile
            self.store.forget_machine(m)
        self.set_state(m, "destroyed")

    def cordon(self, m: MachineRecord, cordoned: bool) -> None:
        """Set ``cordoned`` (no routing by the proxy)."""
        m.cordoned = cordoned
        m.touch()

    # -- wait ---------------------------------------------------------------------------------

    async def wait(
        self, m: MachineRecord, states: Iterable[str], within: float, version: str | None
    ) -> bool:
        """Wait (event-driven) until the machine is in one of ``states``; False on timeout."""
        wanted = set(states)
        if "settled" in wanted:
            wanted |= SETTLED
        old_versions = {v for v, _ in m.versions[1:]}
        if version and version != m.instance_id and version in old_versions:
            # An old version is replaced: it is as stopped (and gone) as it will ever be.
            return bool(wanted & {"stopped", "destroyed"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while m.state not in wanted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event = self.store.waiter(m.id)
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                self.store.drop_waiter(m.id, event)
                return m.state in wanted
        return True
