"""R15 deploy mid-tick: a rolling deploy. Creates are slow (the machine appears after 1-2 s, the
answer comes 2-3 s after that); right after the scaler has claimed jobs and sent their creates, it
gets SIGTERM, and the new replica starts at once (it stands by until the old one lets go).

Must hold: one machine per job (the old replica's in-flight creates finish or stay adoptable, the
new one neither duplicates nor loses them), caps across the handover (the most machines live at
once, counted by the local API, never above the pool cap), the lease released on the way out (the
new replica leads within 3 s of the old one's exit, where an unreleased lease would take its 15 s
TTL), and every job run exactly once.
"""

from __future__ import annotations

import json
import signal
import time

from chaos.harness import ChaosContext
from chaos.measure import all_ran, conclude, wait_for
from chaos.result import ScenarioResult
from scaler.jobs.claims import claims_key
from scaler.local.testing import free_port

ID = "R15"
TITLE = "deploy mid-tick (SIGTERM, new replica)"

CAP = 2
LEASE_TTL_S = 15.0
PROMPT_S = LEASE_TTL_S / 3 + 1.0
"""A follower tries to take the lease every third of its TTL: a released lease is taken within
that (plus a second); an unreleased one only expires 10-15 s after the old replica's exit."""


def _creates_in_flight(ctx: ChaosContext) -> int:
    """Claims whose create was sent and has not returned yet (no machine id recorded)."""
    raw = ctx.redis.hgetall(claims_key(ctx.prefix, ctx.queue))
    return sum(1 for rec in raw.values() if not json.loads(rec).get("machine_id"))


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    app = api.create_app()
    api.set_faults({"Machines_create": {"latency": 1.0, "latency_after_commit": 2.0,
                                        "latency_jitter": 1.0}}, seed=15)
    config = ctx.config(api, [ctx.pool(app, max_machines=CAP)],
                        scaler={"leader_ttl": f"{LEASE_TTL_S:g}s", "claim_grace": "10s"})
    jobs = ctx.jobs(ctx.n(4, 10))
    old = ctx.start_scaler(config, api, name="old")
    in_flight = wait_for(lambda: _creates_in_flight(ctx) > 0, 15, interval=0.02)
    result.check(in_flight, "set-up: no create was in flight to interrupt")
    sent = time.monotonic()
    old.proc.signal(signal.SIGTERM)
    new_config = {**config, "http": {**config["http"], "port": free_port()}}
    new = ctx.start_scaler(new_config, api, name="new")
    code = old.proc.wait(30)
    exited = time.monotonic()
    result.details["old_replica_exit_code"] = code
    result.details["old_replica_stop_s"] = round(exited - sent, 1)
    result.check(code == 0, f"the old replica did not exit cleanly on SIGTERM (exit {code})")
    led = wait_for(lambda: ctx.leader_pid() == new.pid, LEASE_TTL_S + 5, interval=0.05)
    handover = time.monotonic() - exited
    result.details["new_leader_after_exit_s"] = round(handover, 2) if led else None
    result.check(led and handover <= PROMPT_S,
                 "invariant 7 (lease released): the new replica led "
                 + (f"{handover:.1f} s after the old one exited" if led else "never")
                 + f", allowed {PROMPT_S:g} s (an unreleased lease lasts {LEASE_TTL_S:g} s)")
    api.set_faults({"Machines_create": {"latency": 0.5}})
    wait_for(lambda: all_ran(ctx, jobs), ctx.seconds(25, 60), interval=0.2)
    conclude(result, ctx, api, app, jobs, cap=CAP)
    return result
