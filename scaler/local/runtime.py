"""The Runtime protocol: what runs a machine's main process. The store and the lifecycle engine
own machine state; a runtime only starts, signals, stops and reports exits.

Implementations: :class:`scaler.local.process_runtime.ProcessRuntime` (real local processes) and
:class:`scaler.local.sim_runtime.SimRuntime` (no processes; scale tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from scaler.local.model import MachineRecord

__all__ = ["ExitCallback", "Runtime", "RuntimeStartError"]

ExitCallback = Callable[[MachineRecord, int, int, "int | None"], None]
"""``on_exit(machine, run_token, exit_code, signal)``: the main process ended on its own."""


class RuntimeStartError(Exception):
    """The main process could not be started (no command, not executable, ...)."""


class Runtime(Protocol):
    """Runs main processes. Every method is called on the server's event loop."""

    async def start(self, machine: MachineRecord, run_token: int) -> None:
        """Start the main process of ``machine`` (raise :class:`RuntimeStartError`)."""
        ...

    async def stop(self, machine: MachineRecord, signal: int, grace: float) -> int | None:
        """Send ``signal``; after ``grace`` seconds SIGKILL. Return the exit code, if known."""
        ...

    def signal(self, machine: MachineRecord, signal: int) -> bool:
        """Deliver a signal to the main process; False when nothing is running."""
        ...

    def inject_exit(self, machine: MachineRecord, exit_code: int) -> bool:
        """Make the main process end now, reported with ``exit_code`` (faults, admin)."""
        ...

    def suspend(self, machine: MachineRecord) -> None:
        """Freeze the main process (memory kept)."""
        ...

    def resume(self, machine: MachineRecord) -> None:
        """Thaw a frozen main process."""
        ...

    def running(self, machine: MachineRecord) -> bool:
        """Whether a main process is alive."""
        ...

    def pids(self) -> list[int]:
        """Process ids of every main process alive (empty for the sim runtime)."""
        ...

    async def close(self) -> None:
        """Stop everything, waiting for it to be gone."""
        ...

    def kill_all_now(self) -> None:
        """Synchronous last resort: SIGKILL every process group (from any thread)."""
        ...
