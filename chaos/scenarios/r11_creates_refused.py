"""R11 creates fail forever: every create of one pool is refused (Fly out of capacity: 412, and
5xx), for minutes (quick: 10 s), while another pool of the same Fly app has work too.

A refused create keeps its job claimed and is tried again later, never in a tight loop:

- bounded attempts with backoff: half the jobs are refused for capacity (412, which nobody
  retries blindly), half with a 503 (ambiguous: the Fly client looks the machine up and may retry
  the call itself, up to its ``max_attempts``). A capacity-refused job gets at most one create call
  per claim grace over the window, and the wait between its calls grows (the last gap at least 1.5
  times the first); a 503-refused job at most ``max_attempts`` calls per claim grace;
- claims limited by the caps: the refused pool never holds more claims than its cap (the rest of
  its queue stays queued);
- the other pool of the app still gets create budget: all its jobs run during the window;
- no CPU spin: the scaler uses at most a quarter of a core on average during the window;
- no job lost: when the refusals end, each refused job is still queued, claimed, or has run.

The refusals come from a proxy in front of the local API (:mod:`chaos.flyproxy`): the API's own
faults would refuse the other pool's creates too.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from typing import Any

from chaos.flyproxy import FlyProxy, Refusal
from chaos.harness import ChaosContext
from chaos.jobs import side_effects
from chaos.measure import check_jobs, check_machines, live, ours, wait_for
from chaos.procstat import cpu_seconds
from chaos.result import ScenarioResult
from scaler.fly.retry import RetryPolicy

ID = "R11"
TITLE = "creates fail forever"

CAP = 2
GRACE_S = 2.0
MAX_CORE_SHARE = 0.25
BACKOFF_GROWTH = 1.5

_CAPACITY: Refusal = (412, {
    "error": "insufficient resources available to fulfill request: could not reserve resource "
             "for machine", "status": "insufficient_capacity"})
_UNAVAILABLE: Refusal = (503, {"error": "internal: injected fault", "status": "unknown"})


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario."""
    result = ScenarioResult(ID, TITLE)
    window = ctx.seconds(10.0, 180.0)
    n = ctx.n(4, 6)
    api = ctx.local_api()
    app = api.create_app()
    refusing = {"on": True}
    kinds = itertools.cycle([_CAPACITY, _UNAVAILABLE])
    kind_of: dict[str, Refusal] = {}  # job -> how its creates are refused

    def refuse(meta: dict[str, Any]) -> Refusal | None:
        if not refusing["on"] or meta.get("fly_scaler_pool") != "doomed":
            return None
        return kind_of.setdefault(str(meta.get("fly_scaler_job")), next(kinds))

    proxy = FlyProxy(api.url, refuse)
    ctx.on_cleanup(proxy.close)
    qa, qb = f"{ctx.queue}a", f"{ctx.queue}b"
    config = ctx.config(api, [
        ctx.pool(app, name="doomed", queue=qa, max_machines=CAP),
        ctx.pool(app, name="healthy", queue=qb, max_machines=CAP),
    ], scaler={"claim_grace": f"{GRACE_S}s"})
    config["fly"]["api_url"] = proxy.url
    doomed = ctx.jobs(n, queue=qa)
    healthy = ctx.jobs(n, queue=qb, first=100)
    scaler = ctx.start_scaler(config, api)
    claims_key = f"{ctx.prefix}:claims:{qa}"
    cpu0, t0 = cpu_seconds(scaler.pid), time.monotonic()
    most_claims = 0
    healthy_done_at: float | None = None
    while time.monotonic() - t0 < window:
        most_claims = max(most_claims, int(ctx.redis.hlen(claims_key)))
        if healthy_done_at is None:
            runs = side_effects(ctx.redis, ctx.key)
            if all(runs[j.name] for j in healthy):
                healthy_done_at = time.monotonic() - t0
        time.sleep(0.2)
    cpu = cpu_seconds(scaler.pid) - cpu0
    elapsed = time.monotonic() - t0
    refusing["on"] = False
    calls = [c for c in proxy.creates() if c.t <= t0 + elapsed]

    # Attempts per refused job, and their spacing.
    times: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        if c.pool == "doomed" and c.job is not None and c.status >= 400:
            times[c.job].append(c.t)
    names = {j.redis_message_id: j.name for j in doomed}
    bound = 1 + math.ceil(elapsed / GRACE_S)
    retries = RetryPolicy().max_attempts
    over: dict[str, int] = {}
    flat: dict[str, list[float]] = {}
    for job, ts in times.items():
        capacity = kind_of.get(job) == _CAPACITY
        if len(ts) > (bound if capacity else retries * bound):
            over[f"{names.get(job, job)} ({'412' if capacity else '503'})"] = len(ts)
        gaps = [b - a for a, b in itertools.pairwise(sorted(ts))]
        if capacity and len(gaps) >= 2 and gaps[-1] < BACKOFF_GROWTH * gaps[0]:
            flat[names.get(job, job)] = [round(g, 2) for g in gaps]
    share = cpu / elapsed if elapsed else 0.0
    result.details.update({
        "refusal_window_s": round(elapsed, 1),
        "refused_create_calls": sum(len(ts) for ts in times.values()),
        "calls_per_refused_job": {names.get(j, j): len(ts) for j, ts in times.items()},
        "allowed_per_job_412": bound, "allowed_per_job_503": retries * bound,
        "most_claims_of_refused_pool": most_claims,
        "healthy_pool_done_after_s": healthy_done_at,
        "scaler_cpu_s": round(cpu, 2), "scaler_core_share": round(share, 3),
    })
    result.check(not over,
                 f"bounded attempts: create calls per refused job {over} in {elapsed:.0f} s; "
                 f"allowed {bound} for a 412 (one per claim grace of {GRACE_S:.0f} s), "
                 f"{retries * bound} for a 503")
    result.check(not flat,
                 f"backoff: the wait between a capacity-refused job's create calls does not "
                 f"grow (seconds between calls): {flat}")
    result.check(most_claims <= CAP,
                 f"claims limited by the cap: the refused pool held {most_claims} claims, "
                 f"cap {CAP}")
    healthy_creates = sum(1 for c in calls if c.pool == "healthy" and c.status < 300)
    doomed_calls = sum(1 for c in calls if c.pool == "doomed")
    result.details["healthy_creates_in_window"] = healthy_creates
    result.check(healthy_done_at is not None,
                 f"create budget shared: the other pool of the app ran its {n} jobs only "
                 f"partly within the {elapsed:.0f} s window: {healthy_creates} creates for it, "
                 f"{doomed_calls} create calls for the refused pool, at Fly's 1 create/s for the "
                 f"app (half the budget would be {int(elapsed / 2)})")
    result.check(share <= MAX_CORE_SHARE,
                 f"no CPU spin: the scaler used {cpu:.1f} CPU s in {elapsed:.0f} s "
                 f"({share:.0%} of a core, allowed {MAX_CORE_SHARE:.0%})")

    # After the refusals: nothing lost; every job runs (a refused one may still be backing off).
    wait_for(lambda: all(side_effects(ctx.redis, ctx.key)[j.name] for j in [*doomed, *healthy]),
             ctx.seconds(12.0, 120.0), interval=0.2)
    runs = side_effects(ctx.redis, ctx.key)
    ready = {str(x) for x in ctx.redis.lrange(f"{ctx.namespace}:{qa}", 0, -1)}
    claimed = set(ctx.redis.hkeys(claims_key))
    dead = {str(x) for x in ctx.redis.zrange(f"{ctx.namespace}:{qa}.XQ", 0, -1)}
    lost = [j.name for j in doomed if not runs[j.name] and j.redis_message_id not in
            ready | claimed | dead]
    waiting = [j.name for j in doomed if not runs[j.name] and j.name not in lost]
    result.details["refused_jobs_still_waiting"] = waiting
    result.check(not lost, f"invariant 2 (no lost job): refused jobs neither run, queued, "
                           f"claimed nor dead-lettered: {lost}")
    check_jobs(result, runs, healthy)
    twice = [j.name for j in doomed if runs[j.name] > 1]
    result.check(not twice, f"invariant 1 (one run per job): ran more than once: {twice}")
    result.jobs = 2 * n
    wait_for(lambda: not live(ours(api.machines(app))), 20)
    machines = ours(api.machines(app))
    check_machines(result, machines, jobs=[*doomed, *healthy], leaked=live(machines))
    result.peak_live = api.peak_live(app)
    result.cap = 2 * CAP
    result.rate_limited = api.rate_limited()
    return result
