"""R4: split brain. Two replicas share one Redis; the leader freezes (SIGSTOP) right after claiming
jobs whose creates are still on their way (creates answer late, some with 429s to retry), stays
frozen past its lease, the other replica takes over, then the first one resumes; more jobs
arrive once it has.

The resumed replica is stale: it must not act. Holds invariant 7 (one actor at a time): no create
from the stale replica after the takeover, no other write of its goes through after it resumes,
and the writes it still attempts with its old fencing token are refused *and counted* (the fenced
write counter of its metrics; a refusal that only surfaces as an unretrieved task exception is a
failure); plus invariants 1-4 over the whole run. Replicas are told apart by a pool metadata tag
each puts on the machines it creates.

A job the stale leader had claimed may wait, by design, until the create window it recorded on the
claim has passed (no replica relaunches a claim whose create may still be under way). The full run
waits that window out and requires every job to run; the quick run stops earlier and counts such a
job as waiting, not lost, as long as its claim still records a create window in the future.
"""

from __future__ import annotations

import json
import time
from typing import Any

from chaos.harness import ChaosContext
from chaos.jobs import Job, side_effects
from chaos.measure import all_ran, conclude, ours, wait_for
from chaos.result import ScenarioResult
from chaos.scalerproc import ScalerProc
from scaler.jobs.claims import claims_key

ID = "R4"
TITLE = "split brain: stale leader resumes"

TAG = "chaos_replica"
WRITES = ("machine destroyed", "machine started", "claim settled", "orphan marked",
          "job finished")  # the last: a dead letter the executor wrote


def fenced_writes(replica: ScalerProc) -> float:
    """Writes a replica saw refused as stale: the ``fenced`` tick errors, plus any metric whose
    name says fenced."""
    return sum(v for (name, labels), v in replica.metrics().items()
               if ("fenced" in name and not name.endswith("_created"))
               or (name == "fly_scaler_tick_errors_total" and ("stage", "fenced") in labels))


def pending_creates(ctx: ChaosContext, jobs: list[Job]) -> dict[str, float]:
    """Jobs not run yet whose claim records a create that may still be under way: name ->
    seconds until that window ends."""
    runs = side_effects(ctx.redis, ctx.key)
    now_ms = time.time() * 1000
    out = {}
    for j in jobs:
        raw = ctx.redis.hget(claims_key(ctx.prefix, ctx.queue), j.redis_message_id)
        until = json.loads(raw).get("create_until") if raw and not runs[j.name] else None
        if isinstance(until, int | float) and until > now_ms:
            out[j.name] = round((until - now_ms) / 1000, 1)
    return out


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f"{epoch % 1:.6f}"[1:]


def run(ctx: ChaosContext) -> ScenarioResult:
    """Freeze the leader mid-create past its lease; resume it after the takeover."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api(seed=4, faults={"Machines_create": {"latency_after_commit": 1.0,
                                                             "rate_limit_rate": 0.3}})
    app = api.create_app()
    cap = 4
    ttl = 3.0
    replicas: dict[str, ScalerProc] = {}
    for name in ("a", "b"):
        pool = ctx.pool(app, max_machines=cap, metadata={TAG: name})
        config = ctx.config(api, [pool], scaler={"leader_ttl": f"{ttl:g}s"})
        replicas[name] = ctx.start_scaler(config, api, name=name)
        if name == "a":
            result.check(wait_for(lambda: ctx.leader_pid() == replicas["a"].pid, 15),
                         "set-up: replica a never became leader")
    a, b = replicas["a"], replicas["b"]
    jobs = ctx.jobs(ctx.n(3, 8), "work", 0.5)

    claims = claims_key(ctx.prefix, ctx.queue)

    def parked() -> bool:
        """The leader claimed a job whose machine does not exist yet, and none of its creates is
        on the wire (it waits to send or to retry one)."""
        names = {m.get("name") for m in ours(api.machines(app))}
        sending = any(c.get("answered") is None and (c.get("metadata") or {}).get(TAG) == "a"
                      for c in api.creates())
        return not sending and any(json.loads(rec).get("machine_name") not in names
                                   for rec in ctx.redis.hvals(claims))

    def claimed_not_created() -> bool:
        """:func:`parked`, twice 100 ms apart: the create is waiting on the rate governor or a
        retry's backoff, not between its last fence check and the socket. A freeze in that last
        sub-millisecond step sends the request on resume whatever any client checks (only Fly
        could fence it); such a create was sent under a valid lease, and its deterministic name
        keeps it from making a second machine (the new leader adopts it or waits out the
        claim's pending window)."""
        if not parked():
            return False
        time.sleep(0.1)
        return parked()

    result.check(wait_for(claimed_not_created, 20, interval=0.01),
                 "set-up: never saw a job claimed before its machine existed")
    a.freeze()
    frozen_at = time.monotonic()
    took_over = wait_for(lambda: ctx.leader_pid() == b.pid, ttl + 10, interval=0.05)
    takeover = time.monotonic()
    result.check(took_over, "invariant 7: the follower never took over the frozen leader's "
                            f"lease within {ttl + 10:g} s")
    wait_for(lambda: False, ctx.seconds(2.0, 5.0))  # the new leader acts meanwhile
    a.thaw()
    thawed_wall, thawed = time.time(), time.monotonic()
    wait_for(lambda: False, 3.0)  # what the stale replica does once resumed, 429s still on
    api.set_faults({"Machines_create": {"latency_after_commit": 1.0}})
    later = ctx.jobs(ctx.n(2, 4), "record", first=len(jobs))  # only the new leader may take them
    result.check(wait_for(lambda: all_ran(ctx, later), 20),
                 "invariant 2 (no lost job): jobs enqueued after the stale replica resumed did not "
                 "run within 20 s")
    jobs = jobs + later
    if ctx.quick:  # every job ran, or waits on a create window recorded on its claim
        wait_for(lambda: len(side_effects(ctx.redis, ctx.key)) + len(pending_creates(ctx, jobs))
                 >= len(jobs), 12)
    else:
        wait_for(lambda: all_ran(ctx, jobs), 90)
    fenced = fenced_writes(a)
    waiting = pending_creates(ctx, jobs) if ctx.quick else {}
    result.details["waiting_on_create_window_s"] = waiting
    conclude(result, ctx, api, app, jobs, cap=cap, may_be_dead=list(waiting))
    if waiting and result.ran_exactly_once:
        result.ran_exactly_once = None  # not all ran yet: neither yes nor no
    creates = api.creates()
    stale = [c for c in creates if (c.get("metadata") or {}).get(TAG) == "a"
             and c["t"] > takeover]
    after = [e for e in a.log_events() if str(e.get("timestamp", "")) > _iso(thawed_wall)]
    writes = [e for e in after if e.get("event") in WRITES]
    returned = [e for e in after if e.get("event") == "machine created"]
    unretrieved = sum(1 for e in a.log_events()
                      if "never retrieved" in str(e.get("event")) and "Fenced" in str(e))
    by_replica: dict[str, Any] = {
        name: sum(1 for c in creates if (c.get("metadata") or {}).get(TAG) == name)
        for name in replicas
    }
    result.details.update({
        "frozen_s": round(takeover - frozen_at, 2), "creates_by_replica": by_replica,
        "stale_creates": [c.get("name") for c in stale],
        "stale_creates_s_after_resume": [round(c["t"] - thawed, 2) for c in stale],
        "stale_create_answers": [c.get("status") for c in stale],
        "fenced_writes": fenced,
        "writes_after_resume": [f"{e.get('event')} {e.get('machine') or e.get('job') or ''}"
                                for e in writes],
        "creates_returned_after_resume": len(returned),
        "unretrieved_fenced_errors": unretrieved,
    })
    result.check(not stale, f"invariant 7 (one actor at a time): the stale replica sent "
                            f"{len(stale)} create(s) after the takeover: "
                            f"{[c.get('name') for c in stale]}")
    result.check(not writes, "invariant 7 (stale writes refused): writes of the stale replica "
                             f"went through after it resumed: {writes}")
    result.check(fenced > 0 or not (returned or unretrieved),
                 "invariant 7 (stale writes refused and counted): the stale replica carried on "
                 f"with {len(returned)} create(s) that returned after the takeover and no fenced "
                 "write was counted"
                 + (f"; {unretrieved} refusal(s) surfaced only as 'Task exception was never "
                    "retrieved ... Fenced'" if unretrieved else ""))
    return result
