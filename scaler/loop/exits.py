"""Await the exit of machines whose job finished, so their cap slots are reused without waiting for
the next listing (:class:`~scaler.policy.types.AwaitExit`).

A per-job machine counts against the caps until it is gone, and a warm slot is bound again only
once it is stopped. Listings are refreshed at most once a second per app (Fly's list limit), so
without this every job would pay up to a listing interval after its machine exits. Instead, once
a job has finished, one ``wait`` call asks Fly to answer as soon as the machine is stopped or
destroyed (``wait`` is limited per machine, not per app, so it costs no app's budget). The answer
is laid over older listings as an :class:`Exit` in the loop's overlay, and the loop is woken.

What may be concluded, and what may not:

- Only Fly's own answer counts: a wait that timed out (the machine lingers: its process did not
  exit), failed, or was cut short leaves the machine counted as the listing shows it, until a
  listing shows otherwise or ``orphan_grace`` destroys it as ``finished_lingering``.
- A machine that is not a slot is never started again (per-job machines are created with
  ``auto_destroy`` and restart policy ``no``): stopped, it is on its way to destroyed.
- A warm slot is started again by this loop: an exit is laid over a listing only if no start was
  sent since the wait was, so a stop that preceded the slot's next start never hides that run.
- Only a machine a listing showed running is watched: Fly's answer "stopped" then means it
  stopped after that run began. (A slot the loop has just started may still be ``stopped`` in
  Fly for a moment; a wait sent then would be answered at once, about the stop before.)
- A wait saves nothing when the next tick relists the app anyway: while the app's list budget
  has a whole token, no wait is sent (each holds a connection open on both sides).
- Watches are bounded (:data:`MAX_WATCHES` at once, outside the act step's call limit, so they
  never delay a create) and a machine whose wait ended without an answer is not watched again
  for :data:`RETRY_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from scaler.fly.client import AsyncFlyClient, precondition
from scaler.fly.errors import FlyAPIError, FlyTransportError, NotFound, RequestTimeout
from scaler.jobs.leader import Fenced
from scaler.policy.types import MachineView

if TYPE_CHECKING:
    from scaler.loop.governor import RateGovernor
    from scaler.loop.overlay import Overlay

__all__ = ["MAX_WATCHES", "RETRY_S", "WAIT_S", "Exit", "ExitWatch", "exited_state"]

log = structlog.get_logger(__name__)

WAIT_S = 30
"""Seconds one wait may take (Fly allows 1 to 60); a finished job's machine exits in seconds."""

RETRY_S = 30.0
"""A machine whose wait ended without an answer is not watched again before this."""

MAX_WATCHES = 64
"""Waits in flight at once; more finished machines are left to the listings."""

RUNNING_STATES = frozenset({"started", "stopping"})
"""The listed states in which a finished job's machine is watched."""

BUDGET_TTL_S = 0.1
"""How long one reading of an app's list budget is reused."""


@dataclass(frozen=True, slots=True)
class Exit:
    """Fly answered that a machine reached ``state``: asked at ``sent_at``, answered at
    ``answered_at`` (this loop's clock)."""

    state: str
    sent_at: float
    answered_at: float


def exited_state(answer: str | None, slot: bool) -> str:
    """The state to lay over older listings once Fly said the machine exited: ``destroyed`` when
    it said so; a slot is ``stopped``; any other machine of ours that stopped is being destroyed
    (``auto_destroy``), so ``destroying``, which no rule acts on again."""
    if answer == "destroyed":
        return "destroyed"
    return "stopped" if slot else "destroying"


class ExitWatch:
    """Runs the waits; records each answer in ``overlay.exited`` and calls ``wake``."""

    def __init__(
        self,
        fly: AsyncFlyClient,
        overlay: Overlay,
        *,
        wake: Callable[[], None] = lambda: None,
        governor: RateGovernor | None = None,
        clock: Callable[[], float] = time.time,
        wait_s: int = WAIT_S,
        max_watches: int = MAX_WATCHES,
        on_result: Callable[[str], None] = lambda _result: None,
    ) -> None:
        self.fly = fly
        self.on_result = on_result  # each wait's end: exited, gone or unanswered
        self.overlay = overlay
        self.wake = wake
        self.governor = governor
        self.clock = clock
        self.wait_s = wait_s
        self.max_watches = max_watches
        self._running: dict[str, asyncio.Task[None]] = {}
        self._unanswered: dict[str, float] = {}  # machine id -> when its last wait ended so
        self._list_budget: dict[str, tuple[float, float]] = {}  # app -> (read at, tokens)

    def __len__(self) -> int:
        return len(self._running)

    async def watch(self, machine: MachineView, check: Callable[[], None]) -> bool:
        """Start awaiting ``machine``'s exit unless it was not listed running, is watched
        already, was lately watched in vain, too many watches run, or its app is about to be
        listed anyway; ``check`` is the leader's fence check (run before the call). Returns
        whether a watch started."""
        now = self.clock()
        if machine.state not in RUNNING_STATES:
            return False
        if machine.id in self._running or len(self._running) >= self.max_watches:
            return False
        if now - self._unanswered.get(machine.id, float("-inf")) < RETRY_S:
            return False
        answered = self.overlay.exited.get(machine.id)
        if answered is not None and self.overlay.started.get(machine.id, -1.0) < answered.sent_at:
            return False  # answered already (and not started since): the listings catch up
        if await self._listed_soon(machine.app, now):
            return False
        self._unanswered = {k: v for k, v in self._unanswered.items() if now - v < RETRY_S}
        task = asyncio.create_task(self._wait(machine, check))
        self._running[machine.id] = task
        task.add_done_callback(lambda _t: self._done(machine.id))
        return True

    def _done(self, machine_id: str) -> None:
        self._running.pop(machine_id, None)

    async def _listed_soon(self, app: str, now: float) -> bool:
        """Whether the app's list budget has a whole token (the next tick relists it)."""
        if self.governor is None:
            return False
        cached = self._list_budget.get(app)
        if cached is None or now - cached[0] >= BUDGET_TTL_S:
            try:
                tokens = await self.governor.available("Machines_list", f"app:{app}")
            except Exception:  # the governor unreadable: the wait is the safe side
                tokens = 0.0
            cached = self._list_budget[app] = (now, tokens)
        return cached[1] >= 1.0

    async def cancel(self) -> None:
        """Stop every wait (this replica stopped leading, or shuts down)."""
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait(self, m: MachineView, check: Callable[[], None]) -> None:
        slot = m.slot is not None
        # Waiting for ``stopped`` names the machine's version (Fly requires it); without one only
        # ``destroyed`` can be asked for, which a slot never reaches.
        states: tuple[str, ...]
        if m.instance_id is not None:
            states = ("stopped",) if slot else ("stopped", "destroyed")
        elif slot:
            return
        else:
            states = ("destroyed",)
        sent = self.clock()
        try:
            with precondition(check):
                answer = await self.fly.wait_machine(
                    m.app, m.id, list(states), timeout=self.wait_s, version=m.instance_id
                )
            state = exited_state(answer.state or states[0], slot)
            result = "exited"
        except NotFound:
            state, result = "destroyed", "gone"  # Fly keeps destroyed machines only a while
        except (RequestTimeout, Fenced, FlyAPIError, FlyTransportError) as exc:
            self._unanswered[m.id] = self.clock()
            log.debug("machine exit not confirmed", machine=m.id, error=type(exc).__name__)
            self.on_result("unanswered")
            return
        self.overlay.exited[m.id] = Exit(state, sent, self.clock())
        self.on_result(result)
        self.wake()
