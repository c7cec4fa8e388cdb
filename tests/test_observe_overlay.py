"""What act sent since a reused listing was taken, laid over that listing's views: a start makes a
machine ``starting`` as of that start, so a warm slot idle for longer than ``boot_timeout`` is not
taken for a boot that timed out (and destroyed mid-job) on the next ticks (found by chaos R21)."""

from __future__ import annotations

from scaler.loop.observe import overlaid
from scaler.policy import ClaimView, MachineView, Observation, PoolPolicy, QueueView, plan
from scaler.policy.types import Caps

NOW = 10_000.0
POOL = PoolPolicy("ci", "per-job", "ci-app", ("ci",), max_machines=10, claim_grace_s=30,
                  warm_slots=1, slot_template="t1", boot_timeout_s=120)


def _slot() -> MachineView:
    # idle (stopped) for ten minutes, far longer than boot_timeout
    return MachineView(id="a", name="ci-s-a", app="ci-app", pool="ci", state="stopped",
                       created_at=NOW - 3600, updated_at=NOW - 600, slot="t1")


def test_a_start_after_the_listing_shows_the_machine_starting_as_of_that_start() -> None:
    view = overlaid(_slot(), destroyed_at=None, started_at=NOW - 2, taken_at=NOW - 3)
    assert (view.state, view.updated_at) == ("starting", NOW - 2)
    assert overlaid(_slot(), None, NOW - 4, NOW - 3) == _slot()  # the listing is newer
    gone = overlaid(_slot(), destroyed_at=NOW - 1, started_at=NOW - 2, taken_at=NOW - 3)
    assert gone.state == "destroying"


def test_a_long_idle_slot_just_started_on_a_reused_listing_is_not_reaped() -> None:
    view = overlaid(_slot(), destroyed_at=None, started_at=NOW - 2, taken_at=NOW - 3)
    bound = ClaimView(queue="ci", job="j1", message_id="m1", pool="ci", launch=1,
                      claimed_at=NOW - 2, machine_name="ci-j1-1", machine_id="a",
                      state="running", updated_at=NOW - 1)
    obs = Observation(now=NOW, queues={"ci": QueueView("ci", ready=0, in_flight=1)},
                      machines_by_app={"ci-app": (view,)}, create_budget={"ci-app": 2.0},
                      claims={"ci": (bound,)}, slot_jobs={"a": 1})
    p = plan(obs, [POOL], Caps(global_max=50))
    assert not [a for a in p.actions if getattr(a, "machine", None) is not None
                and a.machine.id == "a"], p.actions  # neither destroyed nor its job requeued
