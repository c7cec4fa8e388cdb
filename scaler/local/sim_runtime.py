"""The ``sim`` runtime: no processes. A main process is a timer (or nothing, to run forever)."""

from __future__ import annotations

import asyncio
import signal as signals

from scaler.local.model import MachineRecord
from scaler.local.runtime import ExitCallback

__all__ = ["SimRuntime"]


class SimRuntime:
    """Simulated main processes: ``run_seconds`` then exit with ``exit_code`` (None: forever).

    Only machines with a pending exit hold a timer; an idle running machine costs one set entry.
    """

    def __init__(
        self, on_exit: ExitCallback, run_seconds: float | None = None, exit_code: int = 0
    ) -> None:
        self._on_exit = on_exit
        self._run_seconds = run_seconds
        self._exit_code = exit_code
        self._running: dict[str, int] = {}  # machine id -> run token
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def start(self, machine: MachineRecord, run_token: int) -> None:
        self._cancel(machine.id)
        self._running[machine.id] = run_token
        if self._run_seconds is not None:
            self._schedule(machine, run_token, self._run_seconds, self._exit_code)

    def _schedule(self, machine: MachineRecord, token: int, delay: float, code: int) -> None:
        loop = asyncio.get_running_loop()
        self._timers[machine.id] = loop.call_later(delay, self._exit, machine, token, code, None)

    def _cancel(self, machine_id: str) -> None:
        timer = self._timers.pop(machine_id, None)
        if timer is not None:
            timer.cancel()

    def _exit(self, machine: MachineRecord, token: int, code: int, sig: int | None) -> None:
        if self._running.get(machine.id) != token:
            return
        self._timers.pop(machine.id, None)
        del self._running[machine.id]
        self._on_exit(machine, token, code, sig)

    async def stop(self, machine: MachineRecord, signal: int, grace: float) -> int | None:
        self._cancel(machine.id)
        if self._running.pop(machine.id, None) is None:
            return None
        return 0 if signal != signals.SIGKILL else 128 + int(signals.SIGKILL)

    def signal(self, machine: MachineRecord, signal: int) -> bool:
        token = self._running.get(machine.id)
        if token is None:
            return False
        if signal in (signals.SIGKILL, signals.SIGTERM, signals.SIGINT, signals.SIGQUIT):
            self._cancel(machine.id)
            asyncio.get_running_loop().call_soon(self._exit, machine, token, 128 + signal, signal)
        return True

    def inject_exit(self, machine: MachineRecord, exit_code: int) -> bool:
        token = self._running.get(machine.id)
        if token is None:
            return False
        self._cancel(machine.id)
        self._exit(machine, token, exit_code, None)
        return True

    def suspend(self, machine: MachineRecord) -> None:
        # A frozen sim process does not run out its clock; it starts a fresh one on resume.
        self._cancel(machine.id)

    def resume(self, machine: MachineRecord) -> None:
        token = self._running.get(machine.id)
        if token is not None and self._run_seconds is not None:
            self._schedule(machine, token, self._run_seconds, self._exit_code)

    def running(self, machine: MachineRecord) -> bool:
        return machine.id in self._running

    def pids(self) -> list[int]:
        return []

    async def close(self) -> None:
        self.kill_all_now()

    def kill_all_now(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._running.clear()
