"""R23: a per-job pool over three Fly apps (``apps = [a, b, c]``), each with its own
``[apps.NAME] max_machines``.

1. App ``c`` does not exist yet when the scaler starts (its listing is a 404): with one app
   unknown, the pool launches nothing (unknown is not zero); once ``c`` is created, the jobs run.
2. App ``b`` answers every create with a 429 (a proxy in front of the local API): a burst of jobs
   is created in the other apps.
3. Machines of ours with no claim (orphans) are planted in ``b`` and ``c``.

Holds invariant 4 over several apps (each app's cap, and the pool's cap across the apps, by the
machines' own event times), invariant 6 (a missing app is not an empty one), invariants 1 and 2
(each job once), invariant 3 (orphans in any of the pool's apps are reaped), and the spread: the
burst lands in more than one app, none of it in the app that refuses.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from chaos.creates import job_of
from chaos.flyproxy import FlyProxy, Refusal
from chaos.harness import ChaosContext
from chaos.jobs import side_effects
from chaos.localapi import LocalAPI
from chaos.measure import (
    all_ran,
    check_jobs,
    check_machines,
    crowd,
    live,
    ours,
    wait_for,
)
from chaos.result import ScenarioResult
from scaler.loop.machines import META_POOL, META_QUEUE, META_SCALER

ID = "R23"
TITLE = "pool over several apps: 429s, missing app"

APP_CAP, POOL_CAP = 2, 3
_429: Refusal = (429, {"error": "rate limit exceeded"})


def _all_machines(api: LocalAPI, apps: list[str]) -> list[dict[str, Any]]:
    return [m for a in apps for m in ours(api.machines(a))]


def run(ctx: ChaosContext) -> ScenarioResult:
    """Missing app, then one app refusing, then orphans; caps per app and across them."""
    result = ScenarioResult(ID, TITLE)
    api = ctx.local_api()
    a, b = api.create_app(), api.create_app()
    c = f"{a}-c"  # created in phase 1
    apps = [a, b, c]
    proxy = FlyProxy(api.url, lambda _meta: None)
    ctx.on_cleanup(proxy.close)
    pool = ctx.pool(a, max_machines=POOL_CAP)
    del pool["app"]
    pool["apps"] = apps
    config = ctx.config(api, [pool], apps={x: {"max_machines": APP_CAP} for x in apps})
    config["fly"]["api_url"] = proxy.url
    ctx.start_scaler(config, api)

    early = ctx.jobs(2, "placed", 0.3)
    wait_for(lambda: False, ctx.seconds(3.0, 6.0))
    made_early = [x for x in api.creates() if job_of(x)]
    result.details["created_while_app_missing"] = len(made_early)
    result.check(not made_early, f"invariant 6 (unknown is not zero): {len(made_early)} "
                                 "creates while one of the pool's apps could not be listed")
    r = api.client.post("/v1/apps", json={"name": c, "org_slug": "personal"})
    result.check(r.status_code == 201, f"set-up: app {c} not created: {r.status_code}")
    result.check(wait_for(partial(all_ran, ctx, early), 30),
                 "invariant 2 (no lost job): jobs did not run once the missing app existed")

    seen: dict[str, int] = {}

    def refuse_b(app: str) -> Refusal | None:
        seen[app] = seen.get(app, 0) + 1
        return _429 if app == b else None

    proxy.refuse_in = refuse_b
    burst = ctx.jobs(ctx.n(8, 20), "placed", 1.0, first=len(early))
    wait_for(lambda: False, ctx.seconds(6.0, 15.0))
    proxy.refuse_in = None  # a job whose create got the 429 is relaunched in its claim's app
    ran = wait_for(partial(all_ran, ctx, burst), ctx.seconds(30, 60))
    result.check(ran, "invariant 2 (no lost job): the burst did not run after one app refused")
    landed = {app: n for app, n in seen.items() if app != b}
    result.details.update({"creates_while_b_refused": seen})
    result.check(seen.get(b, 0) > 0, "set-up: app b never refused a create")
    result.check(len(landed) >= 2,
                 f"spread: while b refused, creates should go to both other apps: {seen}")

    meta = {META_SCALER: "fly-scaler", META_POOL: "jobs", META_QUEUE: ctx.queue}
    orphans = {api.plant(b, meta), api.plant(c, meta)}
    reaped = wait_for(lambda: not [m for m in live(_all_machines(api, apps))
                                   if m["id"] in orphans], 20)
    result.check(reaped, "invariant 3 (reaping spans the apps): an orphan in a pool's second "
                         "or third app was not destroyed within 20 s")

    jobs = early + burst
    result.jobs = len(jobs)
    wait_for(lambda: not live(_all_machines(api, apps)), 20)
    machines = [m for m in _all_machines(api, apps) if m["id"] not in orphans]
    check_jobs(result, side_effects(ctx.redis, ctx.key), jobs)
    check_machines(result, machines, jobs=jobs, leaked=live(machines))
    peaks = {x: api.peak_live(x) for x in apps}
    across, who = crowd(machines)
    result.peak_live, result.cap = across, POOL_CAP
    result.rate_limited = api.rate_limited()
    result.details.update({"peak_per_app": peaks})
    result.check(max(peaks.values()) <= APP_CAP,
                 f"invariant 4 (per-app caps): peak live per app {peaks}, cap {APP_CAP} each")
    result.check(across <= POOL_CAP, f"invariant 4 (the pool's cap across apps): {across} live "
                                     f"at once ({who}), cap {POOL_CAP}")
    return result
